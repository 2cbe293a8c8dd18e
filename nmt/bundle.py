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

Directions (`nmt.languages`): a bundle translates the pairs bundle.json lists under "directions"
(a multilingual model, several), or the one `src_lang` -> `tgt_lang` of a bundle from before them.
With "language_tokens", every source starts with the target's `<2xx>` piece (one id of the joint
tokenizer, checked when the bundle loads). `Bundle.direction(source, target)` resolves which
direction a call means; `src_lang` / `tgt_lang` are the languages of a one-direction bundle only.
Scores: a one-direction bundle keeps {test set: scores} (the shape from before), a multilingual
one {"en-de": {test set: scores}, ...}; `Bundle.scores(direction)` reads either.
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
from nmt.errors import BundleError, ConfigError, NmtError
from nmt.languages import Direction, language_token
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
    def directions(self) -> list[Direction]:
        """The directions it translates, as bundle.json lists them (at least one)."""
        return _directions(self.meta, self.path / BUNDLE_FILE)

    @property
    def language_tokens(self) -> bool:
        """Whether its sources start with the target language's token (`nmt.languages`)."""
        return bool(self.meta.get("language_tokens", False))

    @property
    def multilingual(self) -> bool:
        return len(self.directions) > 1

    def translates(self, direction: Direction) -> bool:
        return direction in self.directions

    @property
    def src_lang(self) -> str:
        """The source language of a one-direction bundle (a multilingual one has several:
        `directions`, `direction`)."""
        return self.direction().source

    @property
    def tgt_lang(self) -> str:
        """The target language of a one-direction bundle (see `src_lang`)."""
        return self.direction().target

    def direction(self, source: str | None = None, target: str | None = None) -> Direction:
        """The direction a call means: source and target may be left out (either or both) where
        they leave one direction the bundle translates. NmtError, one line naming the pair and
        the bundle's directions, otherwise."""
        directions = self.directions
        served = ", ".join(map(str, directions))
        fits = [
            d
            for d in directions
            if (source is None or d.source == source) and (target is None or d.target == target)
        ]
        if len(fits) == 1:
            return fits[0]
        asked = f"{source or '?'}-{target or '?'}"
        if not fits:
            raise NmtError(f"{self.name} does not translate {asked}; it translates {served}")
        raise NmtError(
            f"{self.name} translates several directions ({served}): name the source and target "
            f"language (asked {asked})"
        )

    def language_token_id(self, target: str) -> int | None:
        """The source id that asks for `target` (None for a bundle without language tokens)."""
        if not self.language_tokens:
            return None
        return _token_id(self.src_tokenizer, target, self.path)

    def scores(self, direction: Direction | None = None) -> dict[str, Any]:
        """{test set: recorded scores} of one direction (default: the only one)."""
        direction = direction or self.direction()
        recorded = self.meta.get("scores") or {}
        if not self.multilingual:
            return recorded if self.translates(direction) else {}
        return recorded.get(str(direction)) or {}

    @property
    def teacher(self) -> dict[str, Any] | None:
        """The teacher a distilled bundle was trained from (name, version, scores), else None."""
        distilled = self.meta.get("distilled")
        return distilled["teacher"] if distilled else None

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


def _directions(meta: dict[str, Any], meta_file: Path) -> list[Direction]:
    """bundle.json's "directions", or the one from its src_lang and tgt_lang; BundleError otherwise."""
    try:
        if "directions" in meta:
            found = [Direction(*pair) for pair in meta["directions"]]
            if not found or len(set(found)) != len(found):
                raise ValueError("an empty list or one with repeats")
            pair = (meta.get("src_lang"), meta.get("tgt_lang"))
            if pair != (None, None) and found != [Direction(str(pair[0]), str(pair[1]))]:  # hand-edited
                raise ValueError(f"src_lang/tgt_lang say {pair[0]}-{pair[1]}, directions say otherwise")
            return found
        return [Direction(meta["src_lang"], meta["tgt_lang"])]
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"{meta_file}: bad directions ({error})") from None


def _token_id(tokenizer: Tokenizer, target: str, path: Path) -> int:
    """The id of the `<2xx>` piece for `target`; BundleError naming the piece if the tokenizer lacks it."""
    piece = language_token(target)
    processor = tokenizer.processor
    token = processor.piece_to_id(piece)
    if processor.is_unknown(token) or processor.id_to_piece(token) != piece:
        raise BundleError(
            f"{path}: the tokenizer {tokenizer.path.name} has no piece {piece!r} for the language "
            f"token of {target} (language_tokens is true)"
        )
    return token


def _read_meta(meta_file: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """bundle.json, checked for the keys every loader relies on, and the files it names by key."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        named = {
            "weights": WEIGHTS_FILE,
            "tokenizer.src": meta["tokenizer"]["src"],
            "tokenizer.tgt": meta["tokenizer"]["tgt"],
        }
        keys: tuple[str, ...] = ("name", "model", "search", "version")
        if "directions" not in meta:
            keys = ("name", "src_lang", "tgt_lang", *keys)
        missing_key = next((key for key in keys if key not in meta), None)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise BundleError(
            f"{meta_file}: unreadable bundle description ({error.__class__.__name__})"
        ) from None
    if missing_key:
        raise BundleError(f"{meta_file}: missing key {missing_key!r}")
    _check_teacher(meta, meta_file)
    _directions(meta, meta_file)
    return meta, named


def _check_teacher(meta: dict[str, Any], meta_file: Path) -> None:
    """A distilled (student) bundle must name its teacher: BundleError otherwise."""
    if "distilled" not in meta:
        return
    teacher = meta["distilled"].get("teacher") if isinstance(meta["distilled"], dict) else None
    if not isinstance(teacher, dict) or not all(isinstance(teacher.get(k), str) for k in ("name", "version")):
        raise BundleError(
            f"{meta_file}: a distilled bundle must name its teacher (distilled.teacher.name and .version)"
        )


def record_scores(
    path: Path, test_set: str, scores: dict[str, Any], direction: Direction | None = None
) -> None:
    """Store `scores` under "scores"/`test_set` in the bundle's bundle.json, or, for a bundle of
    several directions, under "scores"/`direction`/`test_set` (atomically; the version hashes the
    weights, tokenizers and model config, so it stays the same)."""
    meta_file = bundle_file(path, BUNDLE_FILE, BUNDLE_FILE)
    meta, _ = _read_meta(meta_file)
    recorded = meta.get("scores") or {}
    if len(_directions(meta, meta_file)) > 1:
        if direction is None:
            raise BundleError(f"{path}: a bundle of several directions records scores per direction")
        key = str(direction)
        record_meta(path, "scores", {**recorded, key: {**(recorded.get(key) or {}), test_set: scores}})
    else:
        record_meta(path, "scores", {**recorded, test_set: scores})


def record_meta(path: Path, key: str, value: Any) -> None:
    """Store `value` under `key` in the bundle's bundle.json, atomically (metadata such as scores
    or a confidence calibration: the version does not hash it, so it stays the same)."""
    meta_file = bundle_file(path, BUNDLE_FILE, BUNDLE_FILE)
    meta, _ = _read_meta(meta_file)
    meta[key] = value
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
    bundle = Bundle(
        path=path,
        meta=meta,
        model_config=model_config,
        search=search,
        src_tokenizer=Tokenizer.load(files["tokenizer.src"]),
        tgt_tokenizer=Tokenizer.load(files["tokenizer.tgt"]),
    )
    for target in sorted({d.target for d in bundle.directions}):
        bundle.language_token_id(target)  # a missing token fails here, not on the first request
    return bundle
