"""Model bundles: one self-describing folder per trained model, and the one loader for it.

    bundle.json          architecture, model config, languages, search defaults, training
                         metadata, scores with their signatures, and `version`
    spm.model            the joint SentencePiece model (or spm.<src>.model + spm.<tgt>.model)
    weights.safetensors  the weights (fp32, or fp16 to ship small)

`version` is a content hash of the weights, tokenizers and model config: the cache and the
exports key on it, and `load_bundle` checks it, so an edited or torn bundle is refused rather
than served. Every file a bundle names, exports included, must lie inside its folder
(`bundle_file`): a bundle may come from elsewhere, and its names must not reach out of it.
Translate, evaluate, export and the service all load through `load_bundle`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nmt.checkpoint import atomic_folder, atomic_write, readable_mode
from nmt.config import AnyModelConfig, SearchConfig, parse_section
from nmt.errors import BundleError, ConfigError
from nmt.models import Seq2SeqModel, build_model
from nmt.tokenizer import Tokenizer

BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class Bundle:
    path: Path
    meta: dict[str, Any]
    model_config: AnyModelConfig
    search: SearchConfig
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def src_lang(self) -> str:
        return self.meta["src_lang"]

    @property
    def tgt_lang(self) -> str:
        return self.meta["tgt_lang"]

    def load_model(self, device: str | torch.device = "cpu") -> Seq2SeqModel:
        """Build the model, load its weights (in fp32) and put it in eval mode on `device`."""
        model = build_model(self.model_config, self.src_tokenizer.vocab_size, self.tgt_tokenizer.vocab_size)
        try:
            load_weights(model, self.path / WEIGHTS_FILE)
        except Exception as error:
            raise BundleError(f"{self.path / WEIGHTS_FILE}: weights do not fit the model ({error})") from None
        return model.to(device).eval()


def _tied_names(model: torch.nn.Module) -> dict[str, str]:
    """{name: owner} for every weight that shares its tensor with an earlier name (sorted order)."""
    owners: dict[tuple[int, torch.Size], str] = {}
    tied = {}
    for name, tensor in sorted(model.state_dict().items()):
        key = (tensor.data_ptr(), tensor.shape)
        if key in owners:
            tied[name] = owners[key]
        else:
            owners[key] = name
    return tied


def save_weights(model: torch.nn.Module, path: Path, dtype: torch.dtype) -> None:
    """Write each tensor once (tied embeddings under their first name) and nothing else, so the
    same weights always give the same bytes: the bundle's version is a hash of them."""
    tied = _tied_names(model)
    tensors = {
        name: tensor.detach().to("cpu", dtype).contiguous()
        for name, tensor in model.state_dict().items()
        if name not in tied
    }
    save_file(tensors, str(path))
    os.chmod(path, readable_mode())  # safetensors writes 0600; a server running as another user must read it


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load weights written by `save_weights`; the model's own tying says where shared ones go."""
    state = load_file(str(path))
    for name, owner in _tied_names(model).items():
        state[name] = state[owner]
    model.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=True)


def _tokenizer_files(src_lang: str, tgt_lang: str, joint: bool) -> tuple[str, str]:
    return ("spm.model", "spm.model") if joint else (f"spm.{src_lang}.model", f"spm.{tgt_lang}.model")


def content_hash(folder: Path, files: list[str], model_config: dict[str, Any]) -> str:
    """sha256 over the model config and the named files: the bundle's version."""
    digest = hashlib.sha256(json.dumps(model_config, sort_keys=True).encode())
    for name in sorted(set(files)):
        with open(folder / name, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def save_bundle(
    path: Path,
    model: torch.nn.Module,
    model_config: AnyModelConfig,
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    search: SearchConfig,
    meta: dict[str, Any],
    dtype: str = "float32",
) -> Path:
    """Write a bundle folder atomically (a temporary folder renamed into place).

    meta must hold name, and src_lang and tgt_lang unless the tokenizer is joint (a multilingual
    bundle has "directions" instead); anything else (training, scores) is kept as is.
    """
    path = Path(path)
    joint = src_tokenizer.path == tgt_tokenizer.path
    src_file, tgt_file = _tokenizer_files(meta.get("src_lang", ""), meta.get("tgt_lang", ""), joint)
    model_dict = model_config.model_dump(mode="json")

    def fill(tmp: Path) -> None:
        shutil.copyfile(src_tokenizer.path, tmp / src_file)
        shutil.copyfile(tgt_tokenizer.path, tmp / tgt_file)
        save_weights(model, tmp / WEIGHTS_FILE, _DTYPES[dtype])
        files = [WEIGHTS_FILE, src_file, tgt_file]
        bundle = {
            "format": FORMAT,
            **meta,
            "architecture": model_config.architecture,
            "model": model_dict,
            "src_vocab_size": src_tokenizer.vocab_size,
            "tgt_vocab_size": tgt_tokenizer.vocab_size,
            "tokenizer": {"src": src_file, "tgt": tgt_file},
            "search": search.model_dump(mode="json"),
            "dtype": dtype,
            "parameters": sum(p.numel() for p in model.parameters()),
            "version": content_hash(tmp, files, model_dict),
        }
        text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
        (tmp / BUNDLE_FILE).write_text(text, encoding="utf-8")

    return atomic_folder(path, fill)


def bundle_file(bundle_path: Path, name: object, key: str) -> Path:
    """`bundle_path / name`, refused with a BundleError naming `key` unless it lies inside the bundle.

    Names come from files that whoever made the bundle wrote (bundle.json): one that is
    absolute, climbs out with `..`, or leaves through a symlink would make every loader, the
    service included, read any file of the machine. The content hash is no guard: it is
    computed by reading the named files (and is skipped with verify=False), so this check
    must run before anything is opened."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise BundleError(f"{bundle_path}: {key} must name a file inside the bundle, not {name!r}")
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise BundleError(f"{bundle_path}: {key} {name!r} points outside the bundle")
    path = bundle_path / relative
    try:
        resolved = path.resolve()
        inside = resolved.is_relative_to(bundle_path.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        resolved, inside = path, False
    if not inside:
        raise BundleError(f"{bundle_path}: {key} {name!r} resolves to {resolved}, outside the bundle")
    return path


def bundle_folder(bundle_path: Path, name: str, key: str) -> Path:
    """A folder of the bundle (an export), checked by `bundle_file` along with every entry in it:
    the backends open files there by fixed names, and any of them could be a link out."""
    folder = bundle_file(bundle_path, name, key)
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            bundle_file(bundle_path, f"{name}/{entry.name}", key)
    return folder


def _read_meta(meta_file: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """bundle.json, checked for the keys every loader relies on, and the files it names by key."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        named = {
            "weights": WEIGHTS_FILE,
            "tokenizer.src": meta["tokenizer"]["src"],
            "tokenizer.tgt": meta["tokenizer"]["tgt"],
        }
        keys = ("name", "src_lang", "tgt_lang", "model", "search", "version")
        missing_key = next((key for key in keys if key not in meta), None)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise BundleError(
            f"{meta_file}: unreadable bundle description ({error.__class__.__name__})"
        ) from None
    if missing_key:
        raise BundleError(f"{meta_file}: missing key {missing_key!r}")
    return meta, named


def record_scores(path: Path, test_set: str, scores: dict[str, Any]) -> None:
    """Store `scores` under "scores"/`test_set` in the bundle's bundle.json (atomically; the
    version hashes the weights, tokenizers and model config, so it stays the same)."""
    meta_file = bundle_file(path, BUNDLE_FILE, BUNDLE_FILE)
    meta, _ = _read_meta(meta_file)
    meta["scores"] = {**(meta.get("scores") or {}), test_set: scores}
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    atomic_write(meta_file, lambda handle: handle.write(text.encode("utf-8")))


def bundle_name(path: Path) -> str:
    """The name in a bundle folder's bundle.json, read without loading the bundle."""
    return _read_meta(bundle_file(path, BUNDLE_FILE, BUNDLE_FILE))[0]["name"]


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """The one loader: read and check a bundle folder. Raises BundleError naming what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: model bundle not found (expected a folder with {BUNDLE_FILE})")
    meta_file = bundle_file(path, BUNDLE_FILE, BUNDLE_FILE)
    if not meta_file.is_file():
        raise BundleError(f"{path}: incomplete bundle, {BUNDLE_FILE} is missing")
    meta, named = _read_meta(meta_file)
    files = {key: bundle_file(path, name, key) for key, name in named.items()}  # before any is read
    for key, file in files.items():
        if not file.is_file():
            raise BundleError(f"{path}: incomplete bundle, {named[key]} ({key}) is missing")
    if verify and content_hash(path, list(named.values()), meta["model"]) != meta["version"]:
        raise BundleError(
            f"{path}: files do not match the bundle's version {meta['version']} (edited or corrupt)"
        )
    try:
        model_config = parse_section("model", meta["model"])
        search = parse_section("search", meta["search"])
    except ConfigError as error:
        raise BundleError(f"{meta_file}: {error}") from None
    return Bundle(
        path=path,
        meta=meta,
        model_config=model_config,
        search=search,
        src_tokenizer=Tokenizer.load(files["tokenizer.src"]),
        tgt_tokenizer=Tokenizer.load(files["tokenizer.tgt"]),
    )
