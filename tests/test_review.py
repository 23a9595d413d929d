"""Human review (``scratchgpt evaluate review``): the blinded rating page written from
responses files, the ratings it saves, and what they add up to (mean ratings, win rates, the
raters' agreement, with scikit-learn's Cohen's kappa as the oracle). The page itself is driven
in a real headless Chromium (Debian's ``chromium``, through Playwright), opened from disk.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from scratchgpt.evaluation.review import (
    ReviewError,
    cohen_kappa,
    collect_ratings,
    fleiss_kappa,
    page_data,
    percent_agreement,
    review_data,
    system_names,
    write_review_page,
)

try:  # the Chromium of the web page's test and its `browser` fixture, where both are here
    from test_web_page import CHROMIUM
    from test_web_page import browser as browser  # noqa: F401  (a fixture, used by name)
    NO_BROWSER = ""
except pytest.skip.Exception as absent:  # playwright or chromium missing: only that test skips
    CHROMIUM, NO_BROWSER = None, str(absent)

ITEMS = [("Name a fruit.", "", "An apple."),
         ("Translate into French.", "cat", "chat"),
         ("Add the numbers.", "2, 3", "5"),
         ("Name a colour.", "", "Blue.")]
INJECTIONS = ["<img src=x onerror=\"document.title='hacked'\"><b>bold</b>",
              "</script><script>document.title='pwned'</script>",
              "<!-- <script> & done"]


def write_responses(path: Path, responses: list[str], items=ITEMS, **changes: Any) -> Path:
    entries = [{"instruction": instruction, "input": input_text, "output": output,
                "response": response}
               for (instruction, input_text, output), response
               in zip(items, responses, strict=True)]
    for key, value in changes.items():  # entry3_output="x": set that field; =...: drop it
        index, field = key.removeprefix("entry").split("_", 1)
        if value is ...:
            del entries[int(index)][field]
        else:
            entries[int(index)][field] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    return path


def two_runs(root: Path) -> list[Path]:
    return [write_responses(root / "alpha-run" / "test-responses.json",
                            ["An apple.", "chat", "5", "Red."]),
            write_responses(root / "beta-run" / "test-responses.json",
                            ["A pear.", INJECTIONS[0], INJECTIONS[1], INJECTIONS[2]])]


def ratings_file(path: Path, page: dict[str, Any], rater: str,
                 judged: dict[int, tuple[dict[str, int], str | None]]) -> Path:
    """A ratings file as the page saves it: ``judged`` maps an item's place on the page to
    its ratings (system -> score) and preference."""
    items = [{"item": page["items"][k]["id"], "number": k + 1,
              "shown": [page["systems"][s] for s in page["items"][k]["order"]],
              "ratings": ratings, "preference": preference}
             for k, (ratings, preference) in judged.items()]
    path.write_text(json.dumps({
        "format": "scratchgpt-review-ratings", "version": 1, "page_id": page["page_id"],
        "rater": rater, "saved": "2024-01-01T00:00:00Z", "systems": page["systems"],
        "items_total": len(page["items"]), "items": items}), encoding="utf-8")
    return path


# --- responses files ----------------------------------------------------------------------------

def test_missing_fields_name_the_file_entry_and_field(tmp_path: Path) -> None:
    good = write_responses(tmp_path / "a" / "test-responses.json", ["1", "2", "3", "4"])
    bad = write_responses(tmp_path / "b" / "test-responses.json", ["1", "2", "3", "4"],
                          entry2_response=...)
    # Every check of a responses file (evaluation/responses.py) is tested in test_judge.py.
    with pytest.raises(ValueError, match=rf"{bad}: entry 2 .* has no field 'response'"):
        review_data([good, bad])


def test_files_must_cover_the_same_instructions(tmp_path: Path) -> None:
    full = write_responses(tmp_path / "a" / "test-responses.json", ["1", "2", "3", "4"])
    short = write_responses(tmp_path / "b" / "test-responses.json", ["1", "2", "3"],
                            items=ITEMS[:3])
    with pytest.raises(ReviewError, match=r"do not cover the same instructions.*1 only in "
                                          r".*a/test-responses.json \('Name a colour.'\)"):
        review_data([full, short])
    other_input = write_responses(tmp_path / "c" / "test-responses.json", ["1", "2", "3", "4"],
                                  entry1_input="dog")
    with pytest.raises(ReviewError, match=r"1 only in .*c/test-responses.json "
                                          r"\('Translate into French. / dog'\)"):
        review_data([full, other_input])
    other_reference = write_responses(tmp_path / "d" / "test-responses.json",
                                      ["1", "2", "3", "4"], entry3_output="Green.")
    with pytest.raises(ReviewError, match=r"d/test-responses.json: entry 3 .* another reference"):
        review_data([full, other_reference])
    with pytest.raises(ReviewError, match="is given twice"):
        review_data([full, tmp_path / "a" / ".." / "a" / "test-responses.json"])


def test_systems_are_named_by_run_directory_or_file_stem(tmp_path: Path) -> None:
    assert system_names([tmp_path / "runs" / "alpha" / "test-responses.json",
                         tmp_path / "runs" / "beta" / "test-responses.json",
                         tmp_path / "exports" / "gamma.json"]) == ["alpha", "beta", "gamma"]
    assert system_names([tmp_path / "x" / "run" / "test-responses.json",
                         tmp_path / "y" / "run" / "test-responses.json",
                         tmp_path / "z" / "other.json"]) == ["x/run", "y/run", "other"]
    assert system_names([tmp_path / "a" / "run.json",
                         tmp_path / "run" / "test-responses.json"]) == [
                             "a/run", f"{tmp_path.name}/run"]


def test_the_page_is_shuffled_blinded_and_safe(tmp_path: Path) -> None:
    paths = two_runs(tmp_path)
    out = write_review_page(paths, tmp_path / "out" / "review.html", seed=3)
    html = out.read_text(encoding="utf-8")
    data = page_data(out)
    assert data == review_data(paths, seed=3)
    assert data["systems"] == ["alpha-run", "beta-run"]

    # Every item once, each with both runs' responses, in the order its `order` says.
    by_system = [{entry["instruction"]: entry["response"]
                  for entry in json.loads(path.read_text())} for path in paths]
    assert sorted(item["instruction"] for item in data["items"]) == sorted(i[0] for i in ITEMS)
    for item in data["items"]:
        assert sorted(item["order"]) == [0, 1]
        assert item["responses"] == [by_system[s][item["instruction"]] for s in item["order"]]

    # Seeded: the same seed gives the same page (and id), another seed another order.
    assert review_data(paths, seed=3)["page_id"] == data["page_id"]
    orders = {json.dumps([(item["id"], item["order"]) for item in review_data(paths, seed)
                          ["items"]]) for seed in range(6)}
    assert len(orders) > 1
    assert len({review_data(paths, seed)["page_id"] for seed in range(6)}) == len(orders)

    # No response can close the data's <script> or open a comment: every "<" is escaped.
    data_start = html.index('id="review-data">') + len('id="review-data">')
    embedded = html[data_start:html.index("</script>", data_start)]
    assert "<" not in embedded and ">" not in embedded
    assert html.count("</script>") == 2 and "<!-- <script>" not in html
    # The run names appear nowhere but in the data.
    outside = html[:data_start] + html[data_start + len(embedded):]
    assert "alpha-run" not in outside and "beta-run" not in outside

    one = write_review_page(paths[:1], tmp_path / "one.html")
    assert page_data(one)["systems"] == ["alpha-run"]


# --- agreement --------------------------------------------------------------------------------

def test_cohen_kappa_equals_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for trial in range(40):
        labels = ["alpha", "beta", "tie"] if trial % 2 else [1, 2, 3, 4, 5]
        n = rng.randint(2, 30)
        a = [rng.choice(labels) for _ in range(n)]
        # Raters who agree more than chance, often: copy some of a's labels.
        b = [x if rng.random() < 0.5 else rng.choice(labels) for x in a]
        expected = metrics.cohen_kappa_score(a, b)
        got = cohen_kappa(a, b)
        if got is None:
            assert expected != expected  # scikit-learn's nan
        else:
            assert got == pytest.approx(expected, abs=1e-12)
        assert percent_agreement(a, b) == pytest.approx(metrics.accuracy_score(a, b))
    assert cohen_kappa(["x", "y", "x"], ["x", "y", "x"]) == 1.0
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # chance agreement is certain
    assert cohen_kappa([], []) is None


def test_fleiss_kappa() -> None:
    # The worked example of Fleiss' kappa (Wikipedia): 10 units, 14 raters, 5 categories,
    # P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    units = [[category for category, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(units) == pytest.approx(0.20993, abs=1e-5)
    # With two raters whose labels are equally often each (one a reordering of the other),
    # Fleiss' kappa is Scott's pi, which then equals Cohen's kappa.
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(1)
    a = [rng.choice("abc") for _ in range(25)]
    b = a[:]
    rng.shuffle(b)
    assert fleiss_kappa(list(zip(a, b, strict=True))) == pytest.approx(
        metrics.cohen_kappa_score(a, b))
    assert fleiss_kappa([["x", "x", "x"], ["y", "y", "y"]]) == 1.0
    assert fleiss_kappa([["x", "x"]]) is None
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["x", "y"], ["x"]])


# --- collecting ratings -------------------------------------------------------------------------

def test_collect_two_raters(tmp_path: Path) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    page = review_data(two_runs(tmp_path))
    a, b = "alpha-run", "beta-run"
    ann = ratings_file(tmp_path / "ann.json", page, "ann", {
        0: ({a: 5, b: 2}, a), 1: ({a: 4, b: 4}, "tie"), 2: ({a: 3, b: 1}, a),
        3: ({a: 1, b: 5}, b)})
    bob = ratings_file(tmp_path / "bob.json", page, "bob", {
        0: ({a: 4, b: 2}, a), 1: ({a: 4, b: 3}, a), 2: ({a: 3}, None)})
    summary = collect_ratings([bob, ann])

    assert summary.page_id == page["page_id"]
    assert summary.raters == ["ann", "bob"]
    assert (summary.items_total, summary.items_rated) == (4, 4)
    assert summary.ratings[a]["mean"] == pytest.approx((5 + 4 + 3 + 1 + 4 + 4 + 3) / 7)
    assert summary.ratings[a]["count"] == 7
    assert summary.ratings[b]["mean"] == pytest.approx((2 + 4 + 1 + 5 + 2 + 3) / 6)
    assert summary.ratings[b]["counts"] == {"1": 1, "2": 2, "3": 1, "4": 1, "5": 1}
    # Preferences: ann a, tie, a, b; bob a, a.
    (pair,) = summary.pairwise
    assert (pair["a"], pair["b"], pair["wins"], pair["ties"], pair["losses"], pair["count"]) == (
        a, b, 4, 1, 1, 6)
    assert pair["win_rate"] == pytest.approx(4 / 6) and pair["loss_rate"] == pytest.approx(1 / 6)
    assert summary.preferred[a] == {"picked": 4, "judgements": 6, "rate": pytest.approx(4 / 6)}

    # Agreement on the items both judged: preferences on items 0 and 1; ratings on the five
    # responses both rated.
    preference = summary.agreement["preference"]
    assert (preference["units"], preference["kappa_kind"]) == (2, "cohen")
    assert preference["agreement"] == pytest.approx(0.5)
    assert preference["kappa"] == pytest.approx(
        metrics.cohen_kappa_score([a, "tie"], [a, a]))
    rating = summary.agreement["rating"]
    ann_scores, bob_scores = [5, 2, 4, 4, 3], [4, 2, 4, 3, 3]
    assert rating["units"] == 5
    assert rating["agreement"] == pytest.approx(3 / 5)
    assert rating["kappa"] == pytest.approx(metrics.cohen_kappa_score(ann_scores, bob_scores))
    assert rating["pairs"][0]["raters"] == ["ann", "bob"]

    assert json.loads(json.dumps(summary.to_dict())) == summary.to_dict()
    text = summary.summary()
    assert f"Review page {page['page_id']}: 4 of 4 items rated by 2 raters (ann, bob)" in text
    assert "alpha-run vs beta-run   66.7% /  16.7% /  16.7%  (6 judgements)" in text
    assert "Cohen's kappa" in text

    alone = collect_ratings([ann])
    assert alone.agreement == {"preference": None, "rating": None}
    assert "none measured" in alone.summary()


def test_collect_three_systems_and_raters(tmp_path: Path) -> None:
    paths = [write_responses(tmp_path / name / "test-responses.json", [name] * 4)
             for name in ("a", "b", "c")]
    page = review_data(paths, seed=1)
    picks = {"r1": ["a", "a", "tie", "c"], "r2": ["a", "b", "tie", "c"],
             "r3": ["a", "a", "b", "c"]}
    files = [ratings_file(tmp_path / f"{rater}.json", page, rater,
                          {k: ({"a": 3, "b": 3, "c": 3}, pick) for k, pick in enumerate(prefs)})
             for rater, prefs in picks.items()]
    summary = collect_ratings(files)
    pairs = {(p["a"], p["b"]): (p["wins"], p["ties"], p["losses"]) for p in summary.pairwise}
    # A pick beats each other response; the others are not compared; a tie ties every pair.
    assert pairs == {("a", "b"): (5, 2, 2), ("a", "c"): (5, 2, 3), ("b", "c"): (2, 2, 3)}
    preference = summary.agreement["preference"]
    assert preference["kappa_kind"] == "fleiss" and preference["kappa_units"] == 4
    assert preference["kappa"] == pytest.approx(fleiss_kappa(
        [list(units) for units in zip(*picks.values(), strict=True)]))
    per_item = [sum(x == y for x, y in itertools.combinations(units, 2)) / 3
                for units in zip(*picks.values(), strict=True)]
    assert preference["agreement"] == pytest.approx(sum(per_item) / 4)
    assert len(preference["pairs"]) == 3
    assert summary.agreement["rating"]["kappa"] is None  # every rating a 3: kappa undefined
    assert "kappa n/a" in summary.summary()


def test_collect_rejects_mixed_pages_and_bad_files(tmp_path: Path) -> None:
    paths = two_runs(tmp_path)
    page, other = review_data(paths, seed=0), review_data(paths, seed=1)
    ann = ratings_file(tmp_path / "ann.json", page, "ann", {0: ({"alpha-run": 3}, None)})
    bob = ratings_file(tmp_path / "bob.json", other, "bob", {0: ({"alpha-run": 3}, None)})
    with pytest.raises(ReviewError, match=rf"different review pages: page {page['page_id']}: "
                                          rf".*ann.json; page {other['page_id']}: .*bob.json"):
        collect_ratings([ann, bob])
    again = ratings_file(tmp_path / "ann-2.json", page, "ann", {1: ({"beta-run": 3}, None)})
    with pytest.raises(ReviewError, match="rater 'ann' saved both .*ann.json and .*ann-2.json"):
        collect_ratings([ann, again])
    bad = ratings_file(tmp_path / "bad.json", page, "cy", {0: ({"alpha-run": 6}, None)})
    with pytest.raises(ReviewError, match=r"bad.json: item 0: rating 6 of 'alpha-run' is not 1"):
        collect_ratings([bad])
    stranger = ratings_file(tmp_path / "stranger.json", page, "cy", {0: ({"gamma": 2}, None)})
    with pytest.raises(ReviewError, match="a rating of 'gamma', which is not one of"):
        collect_ratings([stranger])
    odd = ratings_file(tmp_path / "odd.json", page, "cy", {0: ({}, "both")})
    with pytest.raises(ReviewError, match="preference 'both' is neither"):
        collect_ratings([odd])
    (tmp_path / "page.json").write_text(json.dumps(page))
    with pytest.raises(ReviewError, match="is not a ratings file saved by a review page"):
        collect_ratings([tmp_path / "page.json"])


# --- the page in a browser ----------------------------------------------------------------------

@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_rating_in_chromium(browser: Any, tmp_path: Path) -> None:
    paths = two_runs(tmp_path)
    out = write_review_page(paths, tmp_path / "review.html", seed=5)
    data = page_data(out)
    systems = data["systems"]

    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(out.as_uri())
    page.wait_for_selector("#items .item")

    def position(k: int, system: str) -> int:
        return data["items"][k]["order"].index(systems.index(system)) + 1

    def rate(k: int, system: str, score: int) -> str:
        selector = (f"#item-{k + 1} .response[data-position='{position(k, system)}'] "
                    f"input[value='{score}']")
        page.check(selector)
        return selector

    def prefer(k: int, choice: str) -> str:
        value = "tie" if choice == "tie" else position(k, choice)
        selector = f"#item-{k + 1} .preference input[value='{value}']"
        page.check(selector)
        return selector

    # Blinded and inert: no run name in what is shown, markup in responses stays text.
    shown = page.inner_text("body")
    assert "alpha-run" not in shown and "beta-run" not in shown
    assert "Response 1" in shown and "Response 2" in shown
    assert page.locator("#items img, #items b, #items script").count() == 0
    assert sorted(page.locator(".response-text").all_text_contents()) == sorted(
        text for item in data["items"] for text in item["responses"])
    assert page.title() == "Human review"
    assert page.text_content("#progress") == "0 of 4 rated"

    a, b = systems
    checked = [rate(0, a, 4), rate(0, b, 2), prefer(0, a),
               rate(1, a, 4), rate(1, b, 2), prefer(1, "tie"),
               rate(2, a, 3)]  # item 3: half done
    assert page.text_content("#progress") == "2 of 4 rated"
    assert page.locator(".item.done").count() == 2

    page.click("#save")  # no name yet: a request for one, no file
    assert "Enter your name" in page.text_content("#status")
    page.fill("#rater", "Ann")

    # A reload keeps everything (local storage).
    page.reload()
    page.wait_for_selector("#items .item")
    assert page.text_content("#progress") == "2 of 4 rated"
    assert page.input_value("#rater") == "Ann"
    assert all(page.is_checked(selector) for selector in checked)
    rate(2, b, 5)
    prefer(2, b)
    assert page.text_content("#progress") == "3 of 4 rated"

    with page.expect_download() as download_info:
        page.click("#save")
    download = download_info.value
    assert download.suggested_filename == f"ratings-{data['page_id']}-Ann.json"
    saved = tmp_path / "ann.json"
    download.save_as(saved)
    assert "Saved the ratings of 3 items" in page.text_content("#status")

    # The same file rewritten as another page (another seed: another id) starts empty; the
    # first page's ratings are still there when it comes back.
    write_review_page(paths, out, seed=6)
    page.reload()
    page.wait_for_selector("#items .item")
    assert page.text_content("#progress") == "0 of 4 rated"
    write_review_page(paths, out, seed=5)
    page.reload()
    page.wait_for_selector("#items .item")
    assert page.text_content("#progress") == "3 of 4 rated"
    assert page.title() == "Human review"  # no injected script ran
    assert errors == []
    context.close()

    ratings = json.loads(saved.read_text())
    assert ratings["rater"] == "Ann" and ratings["page_id"] == data["page_id"]
    assert [item["item"] for item in ratings["items"]] == [item["id"]
                                                           for item in data["items"][:3]]
    assert ratings["items"][0]["shown"] == [systems[s] for s in data["items"][0]["order"]]
    summary = collect_ratings([saved])
    assert summary.ratings[a]["mean"] == pytest.approx(11 / 3)
    assert summary.ratings[b]["mean"] == pytest.approx(3)
    assert (summary.pairwise[0]["wins"], summary.pairwise[0]["ties"],
            summary.pairwise[0]["losses"]) == (1, 1, 1)

    # A second rater, who prefers b on the first item: agreement on 2 of 3.
    ratings["rater"] = "Bob"
    ratings["items"][0]["preference"] = b
    (tmp_path / "bob.json").write_text(json.dumps(ratings))
    both = collect_ratings([saved, tmp_path / "bob.json"])
    assert both.agreement["preference"]["agreement"] == pytest.approx(2 / 3)
    assert both.agreement["rating"]["agreement"] == 1.0


def test_evaluate_review_command_writes_the_page_and_collects(tmp_path: Path, capsys) -> None:
    from scratchgpt.cli import main

    page_path = tmp_path / "review.html"
    assert main(["evaluate", "review", "--responses", *map(str, two_runs(tmp_path)),
                 "--out", str(page_path), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(page_path)
    page = page_data(page_path)
    assert page["seed"] == 3 and len(page["items"]) == 4
    a, b = "alpha-run", "beta-run"
    ann = ratings_file(tmp_path / "ann.json", page, "ann", {0: ({a: 5, b: 2}, a)})
    assert main(["evaluate", "review", "--responses", *map(str, two_runs(tmp_path)),
                 "--out", str(page_path), "--seed", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "page": str(page_path), "page_id": page["page_id"], "systems": page["systems"],
        "items": 4}
    assert main(["evaluate", "review", "--collect", str(ann), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ratings"][a]["mean"] == 5
    assert main(["evaluate", "review", "--responses", str(ann)]) == 2
    assert "needs --out" in capsys.readouterr().err
