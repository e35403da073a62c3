"""The Learn page through AppTest: every step reached with Next/Back, the jump list and the URL; every question
answered right and wrong with the feedback checked; every step's widget moved; the numbers shown recomputed here
from the shipped records; a bad `step` in the URL; and the lesson without the shipped files or with the picker's
models elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
from app_helpers import APP, assert_no_exception
from streamlit.testing.v1 import AppTest

from aep_core.checkpoint import load_checkpoint
from aep_core.data import load_slice
from aep_core.deploy.simulator import feature_sizes, make_deployment, simulate
from aep_core.evaluation import load_evaluation
from aep_core.paths import data_slice_path, shipped_models_dir
from explorer import glossary, lesson

SHIPPED = shipped_models_dir()
NEEDED = [lesson.LESSON_MODEL, *lesson.STATICS, *lesson.EENETS]
have_shipped = pytest.mark.skipif(
    not all((SHIPPED / f"{n}.{s}.npz").exists() for n in NEEDED for s in ("val", "test")),
    reason="the shipped models' evaluation files are not here",
)
STEP_WIDGETS = {  # the widget each step offers, and a value to move it to
    1: ("select_slider", "learn_exit", 4),
    2: ("radio", "learn_stop_exit", 4),
    3: ("select_slider", "learn_overthought", None),  # the slice's last overthought image, set in the test
    4: ("slider", "learn_threshold", 0.5),
    5: ("selectbox", "learn_cal_exit", 3),
    6: ("radio", "learn_weights", "every exit counts the same"),
    7: ("slider", "learn_tolerance", 1.0),
    8: ("radio", "learn_eenet", 2),
    9: ("select_slider", "learn_device", 0.05),
    10: ("slider", "learn_cascade_t", 0.5),
}


# ---- the answers, recomputed from the records without the lesson's code ----------------------------


def _test(name: str = lesson.LESSON_MODEL):
    return load_evaluation(SHIPPED / f"{name}.test.npz")


def _val(name: str = lesson.LESSON_MODEL):
    return load_evaluation(SHIPPED / f"{name}.val.npz")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _stop_exits(probs: np.ndarray, t: float) -> np.ndarray:
    """(n,) the first exit whose top probability reaches t, else the last; probs (exits, n, classes)."""
    top = probs.max(-1)
    stop = np.vstack([top[:-1] >= t, np.ones((1, top.shape[1]), dtype=bool)])
    return stop.argmax(0)


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def expected_answers() -> dict[int, str]:
    """The right option of every step's question, from the shipped records and metadata."""
    test, val = _test(), _val()
    probs = _softmax(test.logits.astype(np.float64))
    n_exits = test.num_exits
    names = test.info["class_names"]
    right = probs.argmax(-1) == test.labels
    answers = {}
    # 1: an image reaching the end ran the early heads too.
    _, meta = load_checkpoint(SHIPPED / f"{lesson.LESSON_MODEL}.pt")
    assert meta.cost.cum_macs[-1] > meta.cost.full_macs
    answers[1] = "The early exits' heads it passed on the way were computed too."
    # 2: the class whose images stop earliest at t = 0.9.
    stops = _stop_exits(probs, lesson.THRESHOLD)
    depth = [stops[test.labels == c].mean() for c in range(len(names))]
    answers[2] = names[int(np.argmin(depth))]
    # 3: the best any rule could do is the share right at some exit.
    answers[3] = _pct(right.any(0).mean())
    # 4: from 0.5 to 0.99, accuracy and compute.
    cost = test.cum_macs / test.full_macs
    outcome = {}
    for t in (0.5, 0.99):
        s = _stop_exits(probs, t)
        outcome[t] = (right[s, np.arange(test.num_samples)].mean(), cost[s].mean())
    acc_up, macs_up = outcome[0.99][0] >= outcome[0.5][0], outcome[0.99][1] >= outcome[0.5][1]
    answers[4] = {
        (True, True): "Accuracy and compute both rise.",
        (True, False): "Accuracy rises and compute falls.",
        (False, True): "Accuracy falls and compute rises.",
        (False, False): "Accuracy and compute both fall.",
    }[(acc_up, macs_up)]
    # 5: exit 0's accuracy against its mean confidence.
    gap = right[0].mean() - probs[0].max(-1).mean()
    answers[5] = (
        "More often than it says: it is under-confident."
        if gap > 0.002
        else "Less often than it says: it is over-confident."
        if gap < -0.002
        else "About as often as it says: it is calibrated."
    )
    # 6: the equal-weight ensemble of every exit against the final exit.
    ensemble = (probs.mean(0).argmax(-1) == test.labels).mean()
    final = right[-1].mean()
    answers[6] = (
        "The ensemble is more accurate."
        if ensemble > final
        else "The final exit alone is more accurate."
        if ensemble < final
        else "They are exactly as accurate."
    )
    # 7: at zero tolerance the cut is the first exit whose validation ensemble (trained weights) is best.
    w = np.asarray(val.info["ensemble_weights"])[:, None, None]
    val_acc = (np.cumsum(w * _softmax(val.logits.astype(np.float64)), 0).argmax(-1) == val.labels).mean(1)
    removed = n_exits - 1 - int(np.flatnonzero(val_acc >= val_acc.max())[0])
    answers[7] = [
        "Nothing: every exit is kept.",
        "The last block and its exit.",
        "Two or more blocks and their exits.",
    ][min(removed, 2)]
    # 8: the cost weight whose EENet spends the least compute at confidence >= 0.5.
    spent = {}
    for name in lesson.EENETS:
        e = _test(name)
        conf = e.confidences
        s = np.vstack([conf[:-1] >= lesson.EENET_THRESHOLD, np.ones((1, conf.shape[1]), dtype=bool)]).argmax(0)
        lam = load_checkpoint(SHIPPED / f"{name}.pt")[1].training.settings["lam"]
        spent[f"λ = {lam:g}"] = (e.cum_macs[s] / e.full_macs).mean()
    answers[8] = min(spent, key=spent.get)
    # 9: the fastest split of a device (0.5 GMAC/s) and the cloud, by the deployment simulator.
    model, meta = load_checkpoint(SHIPPED / f"{lesson.LESSON_MODEL}.pt")
    sizes = feature_sizes(model, meta.dataset.input_shape)
    latency = {}
    for split in range(-1, n_exits):
        if split == n_exits - 1:
            dep = make_deployment([lesson.QUESTION_GMACS * 1e9], [], [], [])
        else:
            dep = make_deployment(
                [lesson.QUESTION_GMACS * 1e9, lesson.CLOUD_GMACS * 1e9], [lesson.LINK_MBPS], [lesson.LINK_MS], [split]
            )
        latency[lesson.split_label(split, n_exits)] = simulate(
            test, sizes, dep, "max_probability", thresholds=lesson.THRESHOLD
        ).latency_stats()["mean"]
    answers[9] = min(latency, key=latency.get)
    # 10: the cheapest of the first exit and the static networks that is at least as accurate as the first exit.
    first = (cost[0], right[0].mean())
    options = {"the lesson model's first exit": first}
    for name, label in lesson.STATICS.items():
        s = _test(name)
        assert np.array_equal(s.labels, test.labels)
        options[label] = (s.cum_macs[-1] / test.full_macs, s.exit_accuracy()[-1])
    answers[10] = min((k for k, (m, a) in options.items() if a >= first[1]), key=lambda k: options[k][0])
    return answers


# ---- driving the page --------------------------------------------------------------------------------


def _open(step: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/learn.py")
    if step is not None:
        at.query_params["step"] = step
    return at.run()


def _step(at: AppTest) -> int:
    return int(at.subheader[0].value.split(".")[0])


def _texts(at: AppTest) -> str:
    metrics = [f"{m.value} {m.delta}" for m in at.main.metric]
    return "\n".join([m.value for m in at.main.markdown] + metrics + [c.value for c in at.main.caption])


def _last_overthought() -> int:
    """The position in the shipped slice of its last image that an early exit gets right and the final exit wrong."""
    test, slice_data = _test(), load_slice(data_slice_path())
    right = test.logits.argmax(-1) == test.labels
    over = right[:-1].any(0) & ~right[-1]
    return int(np.flatnonzero(over[slice_data["indices"]])[-1])


def _answer(at: AppTest, step: int, option: str) -> tuple[bool, str]:
    """Pick `option` in the step's question; whether the feedback says right, and its text."""
    at.radio(key=f"learn_q{step}").set_value(option).run()
    assert_no_exception(at)
    feedback = [s.value for s in at.main.success] + [w.value for w in at.main.warning]
    assert len(feedback) == 1, feedback
    return bool(at.main.success), feedback[0]


@pytest.fixture
def env(monkeypatch, tmp_path):
    """The app with its picker's models elsewhere (as in tests/test_app.py): the lesson reads the shipped models
    by path whatever the picker offers."""
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))


@have_shipped
def test_next_and_back_walk_every_step_answering_every_question_right_and_wrong(env):
    answers = expected_answers()
    at = _open()
    assert_no_exception(at, errors_too=True)
    for step in range(1, lesson.NUM_STEPS + 1):
        assert _step(at) == step
        assert at.query_params["step"] == str(step)
        question = at.radio(key=f"learn_q{step}")
        assert question.value is None  # unanswered until picked
        assert answers[step] in question.options, (step, answers[step], question.options)
        for option in question.options:
            right, text = _answer(at, step, option)
            assert right == (option == answers[step]), (step, option, text)
            assert text.startswith("Right:" if right else "No:"), text
        kind, key, value = STEP_WIDGETS[step]
        widget = getattr(at, kind)(key=key)
        widget.set_value(_last_overthought() if value is None else value).run()
        assert_no_exception(at, errors_too=True)
        assert _step(at) == step
        assert at.button(key="learn_back").disabled == (step == 1)
        assert at.button(key="learn_next").disabled == (step == lesson.NUM_STEPS)
        if step < lesson.NUM_STEPS:
            at.button(key="learn_next").click().run()
            assert_no_exception(at, errors_too=True)
    for step in range(lesson.NUM_STEPS - 1, 0, -1):
        at.button(key="learn_back").click().run()
        assert_no_exception(at, errors_too=True)
        assert _step(at) == step and at.query_params["step"] == str(step)


@have_shipped
def test_the_jump_list_opens_any_step_and_writes_it_into_the_url(env):
    at = _open()
    for step in (7, 2, 10):
        at.selectbox(key="learn_jump").set_value(step).run()
        assert_no_exception(at, errors_too=True)
        assert _step(at) == step and at.query_params["step"] == str(step)
    # Away to another page and back: the session keeps its step.
    at.switch_page("pages/overview.py").run()
    assert "step" not in at.query_params
    at.switch_page("pages/learn.py").run()
    assert _step(at) == 10


@have_shipped
@pytest.mark.parametrize("step", range(1, lesson.NUM_STEPS + 1))
def test_a_link_opens_its_step(env, step):
    at = _open(str(step))
    assert_no_exception(at, errors_too=True)
    assert _step(at) == step and at.query_params["step"] == str(step)
    assert not at.main.warning
    at.button(key="learn_next" if step < lesson.NUM_STEPS else "learn_back").click().run()
    assert at.query_params["step"] == str(step + 1 if step < lesson.NUM_STEPS else step - 1)


@have_shipped
@pytest.mark.parametrize("bad", ["0", "11", "abc", "-2", "3.5", ""])
def test_a_bad_step_in_the_link_falls_back_to_step_1_with_a_note(env, bad):
    at = _open(bad)
    assert_no_exception(at, errors_too=True)
    assert _step(at) == 1 and at.query_params["step"] == "1"
    notes = [w.value for w in at.main.warning]
    assert len(notes) == 1 and f"`step={bad}` is not a step of this lesson" in notes[0], notes
    at.button(key="learn_next").click().run()
    assert _step(at) == 2 and not at.main.warning  # the note is shown once


@have_shipped
def test_a_link_to_a_step_survives_the_apps_url_sync(env):
    at = _open("4")
    assert _step(at) == 4


@have_shipped
def test_the_numbers_shown_are_the_records(env):
    test, slice_data = _test(), load_slice(data_slice_path())
    probs = _softmax(test.logits.astype(np.float64))
    right = probs.argmax(-1) == test.labels
    at = _open()
    # 1: the cost of each exit, the network's own layers and the heads apart; the last one over 100%.
    _, meta = load_checkpoint(SHIPPED / f"{lesson.LESSON_MODEL}.pt")
    heads_last = sum(e.head_macs for e in meta.cost.exits[:-1]) / meta.cost.full_macs
    question = at.radio(key="learn_q1")
    assert f"costs {_pct(meta.cost.cum_macs[-1] / meta.cost.full_macs)} of the network" in question.label
    at.select_slider(key="learn_exit").set_value(test.num_exits - 1).run()
    assert f"100.0% network + {_pct(heads_last, 2)} heads" in _texts(at)
    # 2: the share stopping at each exit.
    at.selectbox(key="learn_jump").set_value(2).run()
    stops = _stop_exits(probs, lesson.THRESHOLD)
    for k in range(test.num_exits):
        at.radio(key="learn_stop_exit").set_value(k).run()
        assert f"**{_pct((stops == k).mean())}** of the {test.num_samples:,} test images stop at exit {k}" in _texts(at)
    # 3: overthinking on the whole test split, and the slice's overthought images.
    at.selectbox(key="learn_jump").set_value(3).run()
    over = right[:-1].any(0) & ~right[-1]
    text = _texts(at)
    assert f"some exit gets **{_pct(right.any(0).mean())}** right" in text
    assert f"the final exit **{_pct(right[-1].mean())}**" in text
    assert f"**{int(over.sum()):,}** images ({_pct(over.mean(), 2)})" in text
    browse = at.select_slider(key="learn_overthought")
    assert list(browse.options) == [f"#{i + 1}" for i in range(int(over[slice_data["indices"]].sum()))]
    # 10: the quarter-width static network and the lesson model's first exit.
    at.selectbox(key="learn_jump").set_value(10).run()
    small = _test(lesson.SMALL_STATIC)
    text = _texts(at)
    assert (
        f"reaches **{_pct(small.exit_accuracy()[-1], 2)}** at **{_pct(small.cum_macs[-1] / test.full_macs)}**" in text
    )
    assert f"first exit reaches **{_pct(right[0].mean(), 2)}** at **{_pct(test.cum_macs[0] / test.full_macs)}**" in text
    # The cascade's point at the slider's threshold, recomputed.
    at.slider(key="learn_cascade_t").set_value(0.7).run()
    small_probs = _softmax(small.logits[-1].astype(np.float64))
    answered = small_probs.max(-1) >= 0.7
    pred = np.where(answered, small_probs.argmax(-1), probs[-1].argmax(-1))
    macs = (small.cum_macs[-1] + (1 - answered.mean()) * test.full_macs) / test.full_macs
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cascade accuracy"] == _pct((pred == test.labels).mean(), 2)
    assert metrics["Cascade compute"] == _pct(macs)
    assert metrics["Answered by the small network"] == _pct(answered.mean())


def test_without_the_shipped_files_every_step_says_what_is_missing(env, monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_ASSETS_DIR", str(tmp_path / "no_assets"))
    at = _open()
    for step in range(1, lesson.NUM_STEPS + 1):
        assert_no_exception(at)
        assert _step(at) == step
        assert any("This step cannot be shown" in w.value and "missing" in w.value for w in at.main.warning), step
        assert not at.get("radio") or all(r.key != f"learn_q{step}" for r in at.radio)
        if step < lesson.NUM_STEPS:
            at.button(key="learn_next").click().run()


@pytest.mark.parametrize(
    ("raw", "step"),
    [("1", 1), ("10", 10), (" 3 ", 3), ("0", None), ("11", None), ("x", None), ("", None), ("2.0", None)],
)
def test_parse_step_names_a_step_or_says_why_not(raw, step):
    parsed, note = lesson.parse_step(raw)
    assert parsed == step
    assert (note is None) == (step is not None)
    assert lesson.parse_step(None) == (None, None)


def test_every_glossary_term_points_at_a_lesson_step_and_every_step_teaches_some():
    steps = {t.step for t in glossary.GLOSSARY.values()}
    assert steps == set(range(1, lesson.NUM_STEPS + 1))
    text = glossary.help_text("MACs", "oracle", lead="First.")
    assert text.startswith("First.\n\n**MACs**: ") and "(Learn, step 1)" in text and "(Learn, step 4)" in text
    with pytest.raises(KeyError, match="not in the glossary"):
        glossary.term("flops")
