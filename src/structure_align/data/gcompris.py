"""GCompris datasets read out of the Debian ``gcompris-qt-data`` Qt resource bundles (docs/datasets.md).

Three small real-photo sets, used as out-of-domain checks of the offline profile (docs/method.md §7 protocol, different
data):

* ``gcompris_categorization`` (zero-shot): the photos of the *categorization* activity, class = image folder. Four
  folders are real classes (fishes, monuments, renewable energy, tools); ``others`` holds distractor objects of the
  game (cups, chairs, ...) and ``alphabets``/``numbers`` hold only a category cover picture beside SVG drawings, so
  none of them is a class.
* ``gcompris_explore_title`` / ``gcompris_explore_desc`` (retrieval): the photos of the four *explore* activities
  (monuments, world animals, world music, farm animals). Each photo is the ``image2`` of one entry of the activity's
  ``resource/board/board*.qml``, whose ``title`` and ``text`` (``qsTr("...")`` strings) give the caption: the title
  alone, or title + " " + description.

Photos are WebP inside the bundles; they are written out unchanged (PIL reads WebP) under ``images_dir``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd
from tqdm import tqdm

from ..io import write_bytes_if_changed
from .helpers import subset_rows
from .rcc import RccArchive
from .registry import DatasetInfo, SourceSpec, get_source, register_dataset, register_source, source_dir

log = logging.getLogger(__name__)

SOURCE = "gcompris-qt-data"
# Debian bookworm's package; sha256 of the exact .deb bytes measured when it was pinned
register_source(SourceSpec(
    name=SOURCE, client="apt", package="gcompris-qt-data", version="3.1-2",
    sha256="e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
    files=("usr/share/gcompris-qt/rcc",),
    licence="per-file: public domain / CC0 / CC-BY-SA (see the package's copyright)",
    description="GCompris activity data as Qt .rcc bundles (explore_* photos with titles/descriptions, "
                "categorization)"))
RCC_SUBDIR = "usr/share/gcompris-qt/rcc"
IMAGE_SUFFIXES = (".webp", ".jpg", ".jpeg", ".png")

CATEGORIZATION_BUNDLE = "categorization"
CATEGORIZATION_IMAGES = "gcompris/src/activities/categorization/resource/images/"
# folder -> natural phrase used as class name; order fixes the label index
CATEGORIZATION_CLASSES: dict[str, str] = {
    "fishes": "a fish",
    "monuments": "a monument",
    "renewable": "renewable energy",
    "tools": "a tool",
}
# the phrases carry their own article, so the templates do not add one
CATEGORIZATION_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a picture of {}.",
    "an image of {}.",
    "a photo showing {}.",
)
EXPLORE_ACTIVITIES: tuple[str, ...] = (
    "explore_monuments",
    "explore_world_animals",
    "explore_world_music",
    "explore_farm_animals",
)

# -- a tolerant reader of the string literals in QML/JS object literals ---------------------------------------------

_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
      | (?P<comment>//[^\n]*|/\*.*?\*/)
      | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<ident>[A-Za-z_$][\w$.]*)
      | (?P<punct>.)""",
    re.DOTALL | re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def js_unescape(body: str) -> str:
    """Decode the escapes of a JavaScript string literal body (``\\"``, ``\\n``, ``\\u`` and ``\\x`` codes ...)."""
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\" or i + 1 == len(body):
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6]):
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        elif nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2:i + 4]):
            out.append(chr(int(body[i + 2:i + 4], 16)))
            i += 4
        else:
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) tokens of QML/JS source, comments and whitespace dropped, strings decoded."""
    tokens: list[tuple[str, str]] = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup or "punct"
        if kind in ("ws", "comment"):
            continue
        value = m.group()
        if kind == "str":
            value = js_unescape(value[1:-1])
        tokens.append((kind, value))
    return tokens


def _string_value(tokens: list[tuple[str, str]], i: int) -> tuple[str | None, int]:
    """Parse ``"a"``, ``qsTr("a")``, ``"a" + "b"`` (and nestings) at token ``i``; returns (value or None, next
    index)."""
    parts: list[str] = []
    while True:
        if i < len(tokens) and tokens[i][0] == "str":
            parts.append(tokens[i][1])
            i += 1
        elif tokens[i:i + 2] == [("ident", "qsTr"), ("punct", "(")]:
            inner, j = _string_value(tokens, i + 2)
            if inner is None or j >= len(tokens) or tokens[j] != ("punct", ")"):
                return None, i
            parts.append(inner)
            i = j + 1
        else:
            return None, i
        if i < len(tokens) and tokens[i] == ("punct", "+"):
            i += 1
            continue
        return "".join(parts), i


def qml_string_objects(text: str) -> list[dict[str, str]]:
    """Every ``{ ... }`` object of QML/JS source, as the dict of its *string-valued* ``key: value`` pairs.

    Keys may be quoted (``"title": qsTr("...")``) or bare (``property string x: "..."``); non-string values are
    skipped. Objects are returned in the order they close, i.e. innermost first, source order among siblings;
    objects without string pairs are dropped. This reads GCompris board files (``tab: [ {...}, ... ]``) without a JS
    engine: the data there is plain literals wrapped in ``qsTr`` for translation.
    """
    tokens = _tokens(text)
    stack: list[dict[str, str]] = []
    found: list[dict[str, str]] = []
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        if (kind, value) == ("punct", "{"):
            stack.append({})
            i += 1
        elif (kind, value) == ("punct", "}"):
            obj = stack.pop() if stack else {}
            if obj:
                found.append(obj)
            i += 1
        elif kind in ("str", "ident") and i + 1 < len(tokens) and tokens[i + 1] == ("punct", ":"):
            parsed, nxt = _string_value(tokens, i + 2)
            if parsed is not None and stack:
                stack[-1].setdefault(value, parsed)
            i = nxt if parsed is not None else i + 2
        else:
            i += 1
    return found


def _clean_text(text: str) -> str:
    return " ".join(text.split())


def qrc_to_bundle_path(url: str) -> str:
    """``qrc:/gcompris/x.webp`` or ``:/gcompris/x.webp`` -> ``gcompris/x.webp`` (paths inside the bundle)."""
    for prefix in ("qrc:/", ":/"):
        if url.startswith(prefix):
            return url[len(prefix):].lstrip("/")
    return url.lstrip("/")


# -- explore activities --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExploreItem:
    """One photo of an explore activity with its texts."""

    activity: str
    image: str          # path inside the bundle
    title: str
    description: str
    board: str          # board file it was read from

    @property
    def sample_id(self) -> str:
        """``<activity>/<path below resource/ without suffix>``: stable across builds and unique per bundle."""
        rel = PurePosixPath(self.image)
        parts = rel.parts
        below = parts[parts.index("resource") + 1:] if "resource" in parts else parts[-1:]
        return f"{self.activity}/{PurePosixPath(*below).with_suffix('').as_posix()}"


def explore_items(archive: RccArchive, activity: str) -> tuple[list[ExploreItem], dict[str, int]]:
    """Read the photo entries of one explore activity from its board files.

    An entry counts when its ``image2`` is a photo present in the bundle and it has a non-empty ``title``; a photo
    referenced twice keeps its first entry. Returns the items and counters of what was skipped.
    """
    files = set(archive.list())
    boards = sorted(p for p in files if f"/{activity}/" in p and "/board/" in p and p.endswith((".qml", ".js")))
    if not boards:
        raise ValueError(f"{archive.path}: no board files (resource/board/*.qml) of activity {activity!r}")
    items: list[ExploreItem] = []
    seen: set[str] = set()
    counts = {"entries": 0, "duplicate_images": 0, "missing_images": 0, "untitled": 0}
    for board in boards:
        for obj in qml_string_objects(archive.read(board).decode("utf-8")):
            image = qrc_to_bundle_path(obj.get("image2", ""))
            if not image.lower().endswith(IMAGE_SUFFIXES):
                continue
            counts["entries"] += 1
            if image not in files:
                counts["missing_images"] += 1
                log.warning("%s: %s references %s, which is not in the bundle", archive.path.name, board, image)
                continue
            title = _clean_text(obj.get("title", ""))
            if not title:
                counts["untitled"] += 1
                continue
            if image in seen:
                counts["duplicate_images"] += 1
                continue
            seen.add(image)
            items.append(ExploreItem(activity=activity, image=image, title=title,
                                     description=_clean_text(obj.get("text", "")), board=board))
    return items, counts


def _materialise(archive: RccArchive, bundle_path: str, target: Path) -> Path:
    """Write the original image bytes to ``target`` (skipped when an identical file is already there)."""
    write_bytes_if_changed(target, archive.read(bundle_path))
    return target


def _rcc_dir(resources_dir: str | Path) -> Path:
    path = source_dir(resources_dir, SOURCE) / RCC_SUBDIR
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: the acquired {SOURCE!r} source lacks its .rcc folder")
    return path


def _open_bundle(rcc_dir: Path, name: str) -> RccArchive:
    path = rcc_dir / f"{name}.rcc"
    if not path.is_file():
        raise FileNotFoundError(f"expected the GCompris bundle {path} (from Debian {SOURCE})")
    return RccArchive(path)


def build_explore(rcc_dir: Path, images_dir: Path, *, name: str, with_description: bool, limit: int | None = None,
                  seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    """Retrieval manifest of the explore photos; caption = title, or title + " " + description."""
    version = get_source(SOURCE).version
    rows: list[dict] = []
    counts: dict[str, int] = {}
    n_sentences: list[int] = []
    for activity in EXPLORE_ACTIVITIES:
        archive = _open_bundle(rcc_dir, activity)
        items, c = explore_items(archive, activity)
        counts[f"{activity}_images"] = len(items)
        for key, value in c.items():
            counts[key] = counts.get(key, 0) + value
        for item in tqdm(items, desc=f"{name}: {activity}", unit="img", leave=False):
            if with_description and not item.description:
                raise ValueError(f"{archive.path}: {item.board} entry {item.title!r} has no 'text' description")
            caption = f"{item.title} {item.description}" if with_description else item.title
            n_sentences.append(len(re.findall(r"[.!?](?:\s|$)", item.description)))
            target = images_dir.joinpath(*f"{item.sample_id}{PurePosixPath(item.image).suffix}".split("/"))
            _materialise(archive, item.image, target)
            rows.append({"sample_id": item.sample_id, "image_path": str(target), "captions": [caption],
                         "label": -1, "split": "test", "source": SOURCE, "version": version})
    df = pd.DataFrame(rows)
    counts["images"] = len(df)
    if n_sentences:
        counts["description_sentences_min"] = int(min(n_sentences))
        counts["description_sentences_max"] = int(max(n_sentences))
    df = subset_rows(df, [-1] * len(df), limit, seed)
    counts["rows"] = len(df)
    text = "title + ' ' + description" if with_description else "title"
    info = DatasetInfo(name=name, task="retrieval", source=SOURCE, version=version, counts=counts,
                       description=f"GCompris explore activities: real photos (monuments, animals, music) with "
                                   f"caption = {text} from the activities' board QML; out-of-domain test set")
    log.info("%s: %d photos from %d explore activities", name, len(df), len(EXPLORE_ACTIVITIES))
    return df, info


def build_categorization(rcc_dir: Path, images_dir: Path, *, limit: int | None = None,
                         seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    """Zero-shot manifest of the categorization photos; class = folder (only the four real classes)."""
    version = get_source(SOURCE).version
    archive = _open_bundle(rcc_dir, CATEGORIZATION_BUNDLE)
    folders = list(CATEGORIZATION_CLASSES)
    rows: list[dict] = []
    counts: dict[str, int] = {"photos_in_bundle": 0}
    for path in tqdm(archive.list(), desc="gcompris_categorization", unit="file", leave=False):
        if not path.startswith(CATEGORIZATION_IMAGES) or not path.lower().endswith(IMAGE_SUFFIXES):
            continue
        rel = PurePosixPath(path[len(CATEGORIZATION_IMAGES):])
        counts["photos_in_bundle"] += 1
        folder = rel.parts[0] if len(rel.parts) > 1 else ""
        if folder not in CATEGORIZATION_CLASSES:
            key = f"skipped_{folder or 'toplevel'}"
            counts[key] = counts.get(key, 0) + 1
            continue
        target = _materialise(archive, path, images_dir.joinpath(*rel.parts))
        rows.append({"sample_id": rel.with_suffix("").as_posix(), "image_path": str(target), "captions": [],
                     "label": folders.index(folder), "split": "test", "source": SOURCE, "version": version})
    if not rows:
        raise ValueError(f"{archive.path}: no photos under {CATEGORIZATION_IMAGES}{{{','.join(folders)}}}/")
    df = pd.DataFrame(rows)
    for i, folder in enumerate(folders):
        counts[f"class_{folder}"] = int((df["label"] == i).sum())
    df = subset_rows(df, df["label"], limit, seed)
    counts["rows"] = len(df)
    info = DatasetInfo(name="gcompris_categorization", task="zeroshot",
                       classnames=[CATEGORIZATION_CLASSES[f] for f in folders],
                       templates=list(CATEGORIZATION_TEMPLATES), source=SOURCE, version=version, counts=counts,
                       description="GCompris categorization activity: real photos in 4 classes (folders fishes, "
                                   "monuments, renewable, tools; 'others' distractors and cover pictures dropped)")
    log.info("gcompris_categorization: %d photos in %d classes", len(df), len(folders))
    return df, info


@register_dataset("gcompris_categorization", sources=SOURCE, task="zeroshot",
                  description="GCompris categorization photos, 4 classes (zero-shot)")
def _build_gcompris_categorization(resources_dir: Path, images_dir: Path, *, limit: int | None = None,
                                   seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_categorization(_rcc_dir(resources_dir), Path(images_dir), limit=limit, seed=seed)


@register_dataset("gcompris_explore_title", sources=SOURCE, task="retrieval",
                  description="GCompris explore photos, caption = title (retrieval)")
def _build_gcompris_explore_title(resources_dir: Path, images_dir: Path, *, limit: int | None = None,
                                  seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_explore(_rcc_dir(resources_dir), Path(images_dir), name="gcompris_explore_title",
                         with_description=False, limit=limit, seed=seed)


@register_dataset("gcompris_explore_desc", sources=SOURCE, task="retrieval",
                  description="GCompris explore photos, caption = title + description (retrieval)")
def _build_gcompris_explore_desc(resources_dir: Path, images_dir: Path, *, limit: int | None = None,
                                 seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_explore(_rcc_dir(resources_dir), Path(images_dir), name="gcompris_explore_desc",
                         with_description=True, limit=limit, seed=seed)
