"""The scripted module file outside Slicer: it imports with small stand-ins for the parts of Slicer
that only the application has (qt, ctk, ScriptedLoadableModule, parameterNodeWrapper, i18n), it
imports nothing heavy, and its Python and its .ui agree on every widget and parameter name."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_FILE = ROOT / "DiffuX2CT" / "DiffuX2CT.py"
UI_FILE = ROOT / "DiffuX2CT" / "Resources" / "UI" / "DiffuX2CT.ui"

#: Installs the stand-ins, imports the module, prints facts as JSON (run in a fresh interpreter).
STAND_IN_SCRIPT = r'''
import json, sys, types
import slicer  # the real MRML core (slicer-core)

def module(name, **attributes):
    m = types.ModuleType(name)
    m.__dict__.update(attributes)
    sys.modules[name] = m
    return m

class _Anything:
    def __init__(self, *args, **kwargs): pass
    def __getattr__(self, name): return _Anything()
    def __call__(self, *args, **kwargs): return _Anything()

module("qt", QTimer=_Anything, QFileDialog=_Anything, Qt=_Anything())
module("ctk")

class ScriptedLoadableModule:
    def __init__(self, parent): self.parent = parent
class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None): self.parent = parent
class ScriptedLoadableModuleLogic:
    def __init__(self): pass
    def getParameterNode(self): return None
class ScriptedLoadableModuleTest: pass

slm = module("slicer.ScriptedLoadableModule", ScriptedLoadableModule=ScriptedLoadableModule,
             ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
             ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest=ScriptedLoadableModuleTest)
fields = {}
def parameterNodeWrapper(cls):
    fields.update({k: str(v) for k, v in cls.__annotations__.items()})
    return cls
pnw = module("slicer.parameterNodeWrapper", parameterNodeWrapper=parameterNodeWrapper,
             Choice=lambda choices: ("Choice", tuple(choices)), WithinRange=lambda lo, hi: ("WithinRange", lo, hi))
i18n = module("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper, slicer.i18n = slm, pnw, i18n

before = set(sys.modules)
import DiffuX2CT
loaded = sorted(set(sys.modules) - before)

parent = types.SimpleNamespace()
DiffuX2CT.DiffuX2CT(parent)
logic = DiffuX2CT.DiffuX2CTLogic()
entries = [e.id for e in logic.catalog.entries()]
default = logic.catalog.default_entry().id
estimate = logic.estimate(default, steps=25, numSamples=1, device="cpu").text()
print(json.dumps({"title": parent.title, "categories": parent.categories, "loaded": loaded, "fields": fields,
                  "entries": entries, "default": default, "estimate": estimate,
                  "heavy": sorted(m for m in ("torch", "SimpleITK", "monai", "diffusers", "DiffuX2CTLib.network")
                                  if m in sys.modules)}))
'''


@pytest.fixture(scope="module")
def imported():
    pytest.importorskip("slicer", reason="slicer-core wheel not installed")
    done = subprocess.run([sys.executable, "-c", STAND_IN_SCRIPT], cwd=ROOT / "DiffuX2CT", capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_module_imports_with_stand_ins_and_nothing_heavy(imported):
    assert imported["title"] == "DiffuX2CT" and imported["categories"] == ["Reconstruction"]
    assert imported["heavy"] == [], f"heavy modules imported at module load: {imported['heavy']}"
    assert "DiffuX2CTSlicerLib.logic" not in imported["loaded"]  # logic modules load on first use


def test_module_logic_lists_the_registry_models_and_estimates(imported):
    registry = json.loads((ROOT / "Resources" / "Models.json").read_text())
    assert imported["default"] == registry["default"] and imported["entries"][0] == registry["default"]
    assert re.match(r"Estimate: about \d+ s, about [\d,]+ MiB", imported["estimate"]), imported["estimate"]


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def test_every_widget_the_module_uses_exists_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    widgets = _ui_widgets()
    assert used, "the module uses no widget?"
    missing = sorted(used - set(widgets))
    assert not missing, f"widgets used in DiffuX2CT.py but absent from DiffuX2CT.ui: {missing}"


def test_ui_parameter_bindings_match_the_parameter_node():
    tree = ast.parse(MODULE_FILE.read_text())
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DiffuX2CTParameterNode")
    fields = {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    bound = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    assert set(bound.values()) <= fields, f"bound to unknown parameters: {set(bound.values()) - fields}"
    # every parameter has a widget, except the model id (the model list is filled at run time)
    assert fields - set(bound.values()) == {"modelId"}
    # the combo boxes offer exactly the choices the parameter node accepts
    source = MODULE_FILE.read_text()
    for combo, constant in (("samplerComboBox", "SAMPLER_CHOICES"), ("deviceComboBox", "DEVICE_CHOICES"),
                            ("xrayEncodingComboBox", "ENCODING_CHOICES"),
                            ("lateralXrayEncodingComboBox", "LATERAL_ENCODING_CHOICES")):
        items = [i.find("property/string").text for i in _ui_widgets()[combo].findall("item")]
        declared = ast.literal_eval(re.search(rf"^{constant} = (\(.*\))$", source, re.M).group(1))
        assert tuple(items) == declared


def test_samplers_and_encodings_offered_are_the_library_ones():
    from DiffuX2CTLib.diffusion.config import SAMPLERS
    from DiffuX2CTLib.io.xray_encoding import ENCODINGS

    source = MODULE_FILE.read_text()
    declared = ast.literal_eval(re.search(r"^SAMPLER_CHOICES = (\(.*\))$", source, re.M).group(1))
    assert set(declared) == set(SAMPLERS)
    encodings = ast.literal_eval(re.search(r"^ENCODING_CHOICES = (\(.*\))$", source, re.M).group(1))
    assert set(encodings) == {"auto", *ENCODINGS}
    lateral = ast.literal_eval(re.search(r"^LATERAL_ENCODING_CHOICES = (\(.*\))$", source, re.M).group(1))
    assert lateral == ("same", *encodings)
