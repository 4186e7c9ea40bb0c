"""A concept encoder as a sentence-transformers model: `export` writes a folder that

    SentenceTransformer(DIR, trust_remote_code=True)

loads, with or without this package installed: the folder carries the module code
(`modeling/sentence_transformers_modules.py` and the modelling files it imports, byte for byte) and names its
classes by that file, as a Hub repository with custom modules does. Modules: `ConceptEncoderModule` (texts ->
concepts), `ConceptPooling` (mean | weighted | decoder, as `zero-shot --pooling`), sentence-transformers' own
`Normalize` (zero-shot compares L2-normalised vectors). A model card (README.md) names the source run, the pooling
and the run's measured scores.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize

from .. import modeling
from ..modeling.sentence_transformers_modules import ConceptEncoderModule, ConceptPooling
from .encoder import EncoderError, load_encoder, max_tokens

FORMATS = ("sentence-transformers",)


def sentence_transformer(model_path: str | Path, pooling: str = "mean", max_length: int | None = None
                         ) -> SentenceTransformer:
    """The three modules around a trained concept encoder (a run folder or a checkpoint), in memory."""
    model, tokenizer = load_encoder(model_path, pooling)
    if not model.is_concept_encoder:
        raise EncoderError(f"{model_path}: not a concept encoder; a Hugging Face encoder loads in "
                           "sentence-transformers as it is")
    encoder = model.base_model
    concept_config = encoder.config.to_dict()
    if pooling == "weighted":
        pooling_module = ConceptPooling("weighted", concept_config, pooling=model.pooling)
    elif pooling == "decoder":
        pooling_module = ConceptPooling("decoder", concept_config, decoder=model.decoder,
                                        decoder_norm=model.decoder_norm)
    else:
        pooling_module = ConceptPooling("mean", concept_config)
    first = ConceptEncoderModule(encoder, tokenizer, max_tokens(model, max_length))
    return SentenceTransformer(modules=[first, pooling_module, Normalize()], device="cpu").eval()


def export(model_path: str | Path, to: str | Path, format: str = "sentence-transformers", pooling: str = "mean",
           max_length: int | None = None, card: str | None = None) -> Path:
    """Write the model in `format` to `to`, with its module code and a model card (`card`, else a short one that
    names the source and the pooling); returns the folder."""
    if format not in FORMATS:
        raise EncoderError(f"export format must be one of {FORMATS}, got {format!r}")
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise EncoderError(f"{to}: exists and is not an empty folder; export into a new folder")
    model = sentence_transformer(model_path, pooling, max_length)  # a model that does not load fails before any write
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}.partial_"))
    try:  # written beside, then renamed: an interrupted export leaves no half folder under the name
        model.save(str(staging), create_model_card=False)
        _ship_module_code(staging)
        (staging / "README.md").write_text(card or plain_card(model_path, pooling), encoding="utf-8")
        (staging / EXPORT_MARKER).write_text(json.dumps(
            {"source": Path(model_path).name, "format": format, "pooling": pooling}, indent=2), encoding="utf-8")
        if to.exists():
            to.rmdir()  # the empty folder the user named
        os.replace(staging, to)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return to


EXPORT_MARKER = "concept_encoder_export.json"
MODULES_FILE = "sentence_transformers_modules"  # modeling/sentence_transformers_modules.py, shipped in the folder
CODE_DIR = Path(modeling.__file__).parent


def copy_modelling_code(folder: Path) -> None:
    """The modelling files (relative imports only) beside a model's weights, so that the folder loads where this
    package is not installed: the export's module file, `publish`'s auto_map targets."""
    for source in CODE_DIR.glob("*.py"):
        if source.name != "__init__.py":
            shutil.copy2(source, folder / source.name)


def _ship_module_code(folder: Path) -> None:
    """The modelling code in the folder, and modules.json pointed at the copy (a class of this package becomes
    `sentence_transformers_modules.CLASS`), so that the folder loads on its own."""
    copy_modelling_code(folder)
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    for module in modules:
        if module["type"].startswith("concept_encoder."):
            module["type"] = f"{MODULES_FILE}.{module['type'].rsplit('.', 1)[1]}"
    (folder / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")


def plain_card(model_path: str | Path, pooling: str) -> str:
    return "\n".join(["---", "library_name: sentence-transformers", "tags: [concept-encoder, sentence-embeddings]",
                      "---", "", f"# A concept encoder from `{Path(model_path).name}`", "",
                      f"Exported by `concept-encoder export` with `{pooling}` pooling of the concepts. Load it "
                      "(this package need not be installed; the folder carries its code):", "", "```python",
                      "from sentence_transformers import SentenceTransformer",
                      "model = SentenceTransformer('PATH', trust_remote_code=True)",
                      "vectors = model.encode(['a sentence', 'another one'])", "```", ""])


NORMALIZE = ("2_Normalize", "sentence_transformers.base.modules.normalize.Normalize")
EXPORT_LAYOUTS = (  # modules.json as (path, type): today's export, and the one before the folder carried its code
    [("", f"{MODULES_FILE}.ConceptEncoderModule"), ("1_ConceptPooling", f"{MODULES_FILE}.ConceptPooling"), NORMALIZE],
    [("", "concept_encoder.inference.sentence_transformers.ConceptEncoderModule"),
     ("1_ConceptPooling", "concept_encoder.inference.sentence_transformers.ConceptPooling"), NORMALIZE])


def is_own_export(folder: str | Path) -> bool:
    """Whether `folder` has the layout of this package's `export`: its marker file, and a modules.json of exactly
    the encoder, the concept pooling and Normalize at their paths. Such a folder is loaded by `load_own_export`,
    with the installed package's classes: none of the folder's code runs, so `mteb` needs no consent for it."""
    folder = Path(folder)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        layout = [(m["path"], m["type"]) for m in modules]
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return (folder / EXPORT_MARKER).is_file() and layout in EXPORT_LAYOUTS


def load_own_export(folder: str | Path) -> SentenceTransformer:
    """An own export (`is_own_export`) built from the installed classes, reading only weights and configs: no
    code of the folder is imported, whatever its .py files or its configs' auto_map say."""
    folder = str(folder)
    modules = [ConceptEncoderModule.load(folder, local_files_only=True),
               ConceptPooling.load(folder, subfolder="1_ConceptPooling", local_files_only=True), Normalize()]
    return SentenceTransformer(modules=modules, device="cpu").eval()

