"""Human review: a page on which people rate the responses of one or more runs, and the
numbers their saved ratings add up to.

:func:`write_review_page` turns responses files (``RUN/test-responses.json``, as ``scratchgpt
finetune instruct`` writes them) into one self-contained HTML page (``review.html`` beside this
module: plain JavaScript, nothing fetched from elsewhere, works opened from disk). Each
instruction is shown with its input and reference, and the responses of the runs side by side:
the items in a shuffled order and the responses shuffled within each item, *blinded* as
"Response 1", "Response 2", ... so that a rater cannot favour a run by name. The rater gives
each response a 1-5 rating and, with two or more runs, picks the better one (or a tie). The
ratings stay in the browser's local storage (under the page's id, so two pages never mix) and
"Save ratings" downloads them as a JSON file, un-blinded: the run of each response by name.

:func:`collect_ratings` reads the files of one or more raters back: each run's mean rating, the
win / tie / loss rates of each pair of runs, and how far the raters agree (percent agreement
and Cohen's kappa for two raters, Fleiss' kappa for more), in a :class:`ReviewSummary`. Agreement
is measured on preferences (per item) and on ratings (per response, exact matches: unweighted
kappa, which treats a 4 against a 5 as a disagreement like a 1 against a 5).

Preferences between more than two runs: a rater picks the *best* response. That says the pick
beat each other response (one win for it in each of those pairs) but nothing about the others
between themselves, which are then not counted; a tie counts as a tie in every pair.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchgpt.evaluation.responses import load_responses
from scratchgpt.run_dir import write_whole

TEMPLATE = Path(__file__).with_name("review.html")
DATA_MARKER = "/*REVIEW_DATA*/"  # where the page's data goes in the template
TEST_RESPONSES = "test-responses.json"  # the name `scratchgpt finetune instruct` writes
PAGE_FORMAT = "scratchgpt-review-page"
RATINGS_FORMAT = "scratchgpt-review-ratings"
FORMAT_VERSION = 1
TIE = "tie"
SCORES = (1, 2, 3, 4, 5)


class ReviewError(ValueError):
    """A responses or ratings file that cannot be used, with what is wrong and where."""


# --- responses files and the page ------------------------------------------------------------

def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def system_names(paths: Sequence[Path]) -> list[str]:
    """The name each responses file is shown (and saved) under: its run directory's name for
    a ``test-responses.json``, else the file's stem; where two names are the same, as many of
    the folders above as tell them apart (``a/run`` and ``b/run``)."""
    parts = []
    for path in paths:
        path = Path(path).absolute()
        name_parts = path.parent.parts if path.name == TEST_RESPONSES else (
            *path.parent.parts, path.stem)
        parts.append([part for part in name_parts if part != path.anchor])
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p[-d:]) if p else f"system {i + 1}"
                 for i, (p, d) in enumerate(zip(parts, depth, strict=True))]
        counts = Counter(names)
        clashing = [i for i, name in enumerate(names) if counts[name] > 1]
        grown = False
        for i in clashing:
            if depth[i] < len(parts[i]):
                depth[i] += 1
                grown = True
        if not grown:
            break
    counts = Counter(names)
    seen: Counter[str] = Counter()
    for i, name in enumerate(names):  # still the same (never for two different files): number them
        if counts[name] > 1:
            seen[name] += 1
            names[i] = f"{name} ({seen[name]})"
    return names


def _item_id(instruction: str, input_text: str, occurrence: int) -> str:
    key = json.dumps([instruction, input_text, occurrence], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def review_data(responses: Sequence[Path], seed: int = 0, *,
                title: str | None = None) -> dict[str, Any]:
    """What the page shows, as the JSON object embedded in it: ``page_id``, ``systems`` (the
    names), and ``items`` in their shuffled order, each with ``id``, ``instruction``,
    ``input``, ``reference``, ``order`` (the system of each shown response) and ``responses``
    (the texts, in that order). The same files and seed give the same page and page id."""
    paths = [Path(path) for path in responses]
    if not paths:
        raise ReviewError("no responses file given")
    seen_paths: dict[Path, Path] = {}
    for path in paths:
        resolved = path.resolve()
        if resolved in seen_paths:
            raise ReviewError(f"{path} is given twice (as {seen_paths[resolved]} and {path})")
        seen_paths[resolved] = path
    names = system_names(paths)
    entries = [load_responses(path) for path in paths]

    # Entries match across files by instruction and input (the n-th repeat with the n-th).
    keyed: list[dict[tuple[str, str, int], int]] = []
    for file_entries in entries:
        occurrences: Counter[tuple[str, str]] = Counter()
        keys = {}
        for index, entry in enumerate(file_entries):
            pair = (entry["instruction"], entry["input"])
            keys[(*pair, occurrences[pair])] = index
            occurrences[pair] += 1
        keyed.append(keys)
    first, first_keys = paths[0], keyed[0]
    for system in range(1, len(paths)):
        path, keys = paths[system], keyed[system]
        only_first = [key for key in first_keys if key not in keys]
        only_here = [key for key in keys if key not in first_keys]
        if only_first or only_here:
            def listed(keys_: list[tuple[str, str, int]]) -> str:
                shown = "; ".join(repr(_clip(k[0] + (f" / {k[1]}" if k[1] else "")))
                                  for k in keys_[:3])
                return shown + (f"; and {len(keys_) - 3} more" if len(keys_) > 3 else "")
            problems = []
            if only_first:
                problems.append(f"{len(only_first)} only in {first} ({listed(only_first)})")
            if only_here:
                problems.append(f"{len(only_here)} only in {path} ({listed(only_here)})")
            raise ReviewError(f"{first} and {path} do not cover the same instructions "
                              f"(matched by instruction and input): {'; '.join(problems)}")
        for key, index in keys.items():
            reference = entries[0][first_keys[key]]["output"]
            here = entries[system][index]["output"]
            if here != reference:
                raise ReviewError(f"{path}: entry {index} ({_clip(key[0])!r}) has another "
                                  f"reference than entry {first_keys[key]} of {first}")

    rng = random.Random(seed)
    order_keys = list(first_keys)
    rng.shuffle(order_keys)
    items = []
    for key in order_keys:
        entry = entries[0][first_keys[key]]
        order = list(range(len(paths)))
        rng.shuffle(order)
        items.append({
            "id": _item_id(*key),
            "instruction": entry["instruction"],
            "input": entry["input"],
            "reference": entry["output"],
            "order": order,
            "responses": [entries[system][keyed[system][key]]["response"] for system in order],
        })
    content = {"systems": names, "items": items, "seed": seed}
    page_id = hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False)
                             .encode("utf-8")).hexdigest()[:16]
    return {"format": PAGE_FORMAT, "version": FORMAT_VERSION, "page_id": page_id,
            "title": title or "Human review", **content}


def embed_json(data: Any) -> str:
    """``data`` as JSON that is safe inside an HTML ``<script>`` element: every ``<``, ``>``
    and ``&`` written as a ``\\u`` escape (only strings can hold them), so no text in it can
    close the element (``</script>``) or open a comment (``<!--``)."""
    text = json.dumps(data, ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def write_review_page(responses: Sequence[Path], out: Path, seed: int = 0, *,
                      title: str | None = None) -> Path:
    """Write the review page of the runs whose responses files are ``responses`` (one or more,
    covering the same instructions) to ``out``; ``seed`` fixes the shuffled orders. Returns
    ``out``."""
    data = review_data(responses, seed, title=title)
    template = TEMPLATE.read_text(encoding="utf-8")
    if template.count(DATA_MARKER) != 1:
        raise RuntimeError(f"{TEMPLATE} lacks its data marker {DATA_MARKER}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_whole(out, template.replace(DATA_MARKER, embed_json(data)))
    return out


def page_data(page: Path) -> dict[str, Any]:
    """The data embedded in a page :func:`write_review_page` wrote."""
    text = Path(page).read_text(encoding="utf-8")
    start_tag = '<script type="application/json" id="review-data">'
    start = text.find(start_tag)
    if start < 0:
        raise ReviewError(f"{page} is not a review page")
    start += len(start_tag)
    return json.loads(text[start:text.index("</script>", start)])


# --- agreement -----------------------------------------------------------------------------

def percent_agreement(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """The fraction of units two raters labelled alike (None for no units)."""
    if len(a) != len(b):
        raise ValueError(f"two raters' labels differ in number ({len(a)} and {len(b)})")
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else None


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels of the same units: (p_o - p_e) / (1 - p_e), with p_o
    the fraction of units they label alike and p_e = sum over labels k of p_a(k) p_b(k), the
    agreement expected by chance from how often each uses each label. None where undefined:
    no units, or both raters giving every unit one and the same label (p_e = 1)."""
    observed = percent_agreement(a, b)
    if observed is None:
        return None
    n = len(a)
    count_a, count_b = Counter(a), Counter(b)
    chance = sum(count_a[label] * count_b[label] for label in count_a)  # p_e * n**2
    if chance == n * n:
        return None
    expected = chance / (n * n)
    return (observed - expected) / (1 - expected)


def fleiss_kappa(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa of ``units``, each the labels that the same number (two or more) of raters
    gave it. With n raters, N units and n_ij raters giving unit i label j: P_i =
    (sum_j n_ij^2 - n) / (n (n - 1)) is the agreement on unit i, p_j = sum_i n_ij / (N n)
    the share of label j, and kappa = (mean P_i - sum_j p_j^2) / (1 - sum_j p_j^2). None where
    undefined: no units, or every label the same."""
    if not units:
        return None
    n = len(units[0])
    if n < 2 or any(len(unit) != n for unit in units):
        raise ValueError("Fleiss' kappa needs the same number (two or more) of labels per unit")
    counts = [Counter(unit) for unit in units]
    agreement = sum((sum(c * c for c in count.values()) - n) / (n * (n - 1))
                    for count in counts) / len(units)
    totals: Counter[Hashable] = Counter()
    for count in counts:
        totals.update(count)
    expected = sum((total / (len(units) * n)) ** 2 for total in totals.values())
    if len(totals) == 1:
        return None
    return (agreement - expected) / (1 - expected)


def _agreement(labels: dict[str, dict[Any, Any]]) -> dict[str, Any] | None:
    """How far raters agree on units: ``labels`` is rater -> unit -> label. ``units``: those
    labelled by two or more raters; ``agreement``: the mean, over those, of the fraction of
    rater pairs that agree (for two raters, the fraction of units they label alike);
    ``kappa``: Cohen's (two raters) or Fleiss' (over the units all raters labelled);
    ``pairs``: each pair of raters' units in common, agreement and Cohen's kappa."""
    raters = sorted(rater for rater, units in labels.items() if units)
    if len(raters) < 2:
        return None
    by_unit: dict[Any, list[Any]] = defaultdict(list)
    for rater in raters:
        for unit, label in labels[rater].items():
            by_unit[unit].append(label)
    shared = [unit_labels for unit_labels in by_unit.values() if len(unit_labels) >= 2]
    pair_shares = []
    for unit_labels in shared:
        pairs = list(itertools.combinations(unit_labels, 2))
        pair_shares.append(sum(x == y for x, y in pairs) / len(pairs))
    pairs_out = []
    for first, second in itertools.combinations(raters, 2):
        common = [unit for unit in labels[first] if unit in labels[second]]
        a = [labels[first][unit] for unit in common]
        b = [labels[second][unit] for unit in common]
        pairs_out.append({"raters": [first, second], "units": len(common),
                          "agreement": percent_agreement(a, b), "cohen_kappa": cohen_kappa(a, b)})
    if len(raters) == 2:
        kind, kappa, kappa_units = "cohen", pairs_out[0]["cohen_kappa"], pairs_out[0]["units"]
    else:
        complete = [unit_labels for unit_labels in by_unit.values()
                    if len(unit_labels) == len(raters)]
        kind, kappa, kappa_units = "fleiss", fleiss_kappa(complete), len(complete)
    return {"raters": len(raters), "units": len(shared),
            "agreement": sum(pair_shares) / len(pair_shares) if pair_shares else None,
            "kappa": kappa, "kappa_kind": kind, "kappa_units": kappa_units, "pairs": pairs_out}


# --- saved ratings ---------------------------------------------------------------------------

@dataclass
class RaterFile:
    """One rater's saved ratings: item id -> system -> score, and item id -> preference (a
    system's name or ``"tie"``)."""

    path: Path
    rater: str
    page_id: str
    systems: list[str]
    items_total: int | None
    ratings: dict[str, dict[str, int]]
    preferences: dict[str, str]


def load_ratings(path: Path) -> RaterFile:
    """A ratings file the review page saved, checked."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReviewError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != RATINGS_FORMAT:
        raise ReviewError(f"{path} is not a ratings file saved by a review page "
                          f"(no \"format\": \"{RATINGS_FORMAT}\")")
    if data.get("version") != FORMAT_VERSION:
        raise ReviewError(f"{path}: ratings format version {data.get('version')!r}; "
                          f"this scratchgpt reads version {FORMAT_VERSION}")
    for name, kind in (("page_id", str), ("rater", str), ("systems", list), ("items", list)):
        if not isinstance(data.get(name), kind):
            raise ReviewError(f"{path}: field {name!r} is missing or not a {kind.__name__}")
    rater = data["rater"].strip()
    if not rater:
        raise ReviewError(f"{path}: the rater has no name")
    systems = data["systems"]
    if not systems or not all(isinstance(name, str) for name in systems):
        raise ReviewError(f"{path}: 'systems' must be a list of names")
    ratings: dict[str, dict[str, int]] = {}
    preferences: dict[str, str] = {}
    for index, item in enumerate(data["items"]):
        where = f"{path}: item {index}"
        if not isinstance(item, dict) or not isinstance(item.get("item"), str):
            raise ReviewError(f"{where} has no item id")
        item_id = item["item"]
        if item_id in ratings:
            raise ReviewError(f"{where}: item {item_id} appears twice")
        scores = item.get("ratings") or {}
        if not isinstance(scores, dict):
            raise ReviewError(f"{where}: 'ratings' is not an object")
        for system, score in scores.items():
            if system not in systems:
                raise ReviewError(f"{where}: a rating of {system!r}, which is not one of "
                                  f"the page's systems ({', '.join(systems)})")
            if type(score) is not int or score not in SCORES:
                raise ReviewError(f"{where}: rating {score!r} of {system!r} is not 1 to 5")
        ratings[item_id] = dict(scores)
        preference = item.get("preference")
        if preference is not None:
            if preference != TIE and preference not in systems:
                raise ReviewError(f"{where}: preference {preference!r} is neither \"tie\" nor "
                                  f"one of the page's systems ({', '.join(systems)})")
            if len(systems) < 2:
                raise ReviewError(f"{where}: a preference on a page of one system")
            preferences[item_id] = preference
    items_total = data.get("items_total")
    return RaterFile(path, rater, data["page_id"], list(systems),
                     items_total if isinstance(items_total, int) else None, ratings, preferences)


@dataclass
class ReviewSummary:
    """What the raters' ratings of one review page add up to (see :func:`collect_ratings`)."""

    page_id: str
    systems: list[str]
    raters: list[str]
    items_total: int | None  # the items on the page
    items_rated: int  # items with at least one rating or preference
    ratings: dict[str, dict[str, Any]]  # system -> mean, count, counts (of each score 1-5)
    preferred: dict[str, dict[str, Any]]  # system -> picked (as better / best), of judgements
    pairwise: list[dict[str, Any]]  # each pair: wins, ties, losses (of the first), rates
    agreement: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"page_id": self.page_id, "systems": self.systems, "raters": self.raters,
                "items_total": self.items_total, "items_rated": self.items_rated,
                "ratings": self.ratings, "preferred": self.preferred,
                "pairwise": self.pairwise, "agreement": self.agreement}

    def summary(self) -> str:
        """A few tables for a person at a terminal."""
        of = f" of {self.items_total}" if self.items_total is not None else ""
        lines = [f"Review page {self.page_id}: {self.items_rated}{of} items rated by "
                 f"{len(self.raters)} rater{'s' if len(self.raters) != 1 else ''} "
                 f"({', '.join(self.raters)})", ""]
        width = max(len("system"), *(len(name) for name in self.systems))
        lines.append(f"{'system':<{width}}  {'mean':>5}  {'ratings':>7}  "
                     + "  ".join(f"{score:>4}" for score in SCORES))
        for name in self.systems:
            stats = self.ratings[name]
            mean = f"{stats['mean']:.2f}" if stats["mean"] is not None else "-"
            lines.append(f"{name:<{width}}  {mean:>5}  {stats['count']:>7}  "
                         + "  ".join(f"{stats['counts'][str(score)]:>4}" for score in SCORES))
        if self.pairwise:
            lines += ["", "Preferences (win / tie / loss of the first):"]
            pair_width = max(len(f"{p['a']} vs {p['b']}") for p in self.pairwise)
            for pair in self.pairwise:
                label = f"{pair['a']} vs {pair['b']}"
                if pair["count"]:
                    lines.append(f"  {label:<{pair_width}}  {100 * pair['win_rate']:5.1f}% / "
                                 f"{100 * pair['tie_rate']:5.1f}% / "
                                 f"{100 * pair['loss_rate']:5.1f}%  ({pair['count']} judgements)")
                else:
                    lines.append(f"  {label:<{pair_width}}  no judgements")
        lines += ["", "Agreement between raters:"]
        any_agreement = False
        for what, unit in (("preference", "items"), ("rating", "responses")):
            stats = self.agreement.get(what)
            if not stats:
                continue
            any_agreement = True
            agreement = ("-" if stats["agreement"] is None
                         else f"{100 * stats['agreement']:.1f}%")
            kappa = "n/a" if stats["kappa"] is None else f"{stats['kappa']:.3f}"
            kind = "Cohen's" if stats["kappa_kind"] == "cohen" else "Fleiss'"
            lines.append(f"  {what}s: {agreement} agree on {stats['units']} {unit} rated by 2+ "
                         f"raters; {kind} kappa {kappa} ({stats['kappa_units']} {unit})")
        if not any_agreement:
            lines.append("  none measured: it needs two raters rating the same items")
        return "\n".join(lines)


def collect_ratings(files: Sequence[Path]) -> ReviewSummary:
    """Add up the ratings files saved from one review page, by one or more raters (one file
    each): each system's mean rating, each pair's win / tie / loss rates, and the raters'
    agreement on the items two or more of them rated."""
    if not files:
        raise ReviewError("no ratings file given")
    loaded = [load_ratings(Path(path)) for path in files]
    pages: dict[str, list[str]] = defaultdict(list)
    for rater_file in loaded:
        pages[rater_file.page_id].append(str(rater_file.path))
    if len(pages) > 1:
        raise ReviewError("the ratings come from different review pages: " + "; ".join(
            f"page {page_id}: {', '.join(paths)}" for page_id, paths in pages.items()))
    first = loaded[0]
    by_rater: dict[str, RaterFile] = {}
    for rater_file in loaded:
        if rater_file.systems != first.systems:
            raise ReviewError(f"{rater_file.path} and {first.path} name other systems "
                              f"though from the same page")
        if rater_file.rater in by_rater:
            earlier = by_rater[rater_file.rater].path
            raise ReviewError(f"rater {rater_file.rater!r} saved both {earlier} and "
                              f"{rater_file.path}: give one file per rater (the later save "
                              f"holds all of that rater's ratings)")
        by_rater[rater_file.rater] = rater_file
    systems = first.systems

    ratings = {}
    for name in systems:
        scores = [item[name] for rf in loaded for item in rf.ratings.values() if name in item]
        ratings[name] = {"mean": sum(scores) / len(scores) if scores else None,
                         "count": len(scores),
                         "counts": {str(score): scores.count(score) for score in SCORES}}

    judgements = [preference for rf in loaded for preference in rf.preferences.values()]
    preferred = {name: {"picked": judgements.count(name), "judgements": len(judgements),
                        "rate": judgements.count(name) / len(judgements) if judgements else None}
                 for name in systems}
    pairwise = []
    for a, b in itertools.combinations(systems, 2):
        wins, ties, losses = judgements.count(a), judgements.count(TIE), judgements.count(b)
        count = wins + ties + losses
        pairwise.append({"a": a, "b": b, "wins": wins, "ties": ties, "losses": losses,
                         "count": count,
                         "win_rate": wins / count if count else None,
                         "tie_rate": ties / count if count else None,
                         "loss_rate": losses / count if count else None})

    rated: set[str] = set()
    for rf in loaded:
        rated.update(item for item, scores in rf.ratings.items() if scores)
        rated.update(rf.preferences)
    agreement = {
        "preference": _agreement({rf.rater: rf.preferences for rf in loaded})
        if len(systems) > 1 else None,
        "rating": _agreement({rf.rater: {(item, name): score
                                         for item, scores in rf.ratings.items()
                                         for name, score in scores.items()}
                              for rf in loaded}),
    }
    totals = {rf.items_total for rf in loaded if rf.items_total is not None}
    return ReviewSummary(page_id=first.page_id, systems=systems, raters=sorted(by_rater),
                         items_total=max(totals) if totals else None, items_rated=len(rated),
                         ratings=ratings, preferred=preferred, pairwise=pairwise,
                         agreement=agreement)
