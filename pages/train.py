"""Train: train a small early-exit model from the browser, in a background thread, with live progress;
the result joins the model picker."""

import re
import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from aep_core.errors import AepError
from aep_core.training import METHODS, SCHEMES, MethodSettings, TrainConfig
from aep_core.training.job import TrainJob, run_train_job
from explorer.catalog import model_files, trained_dir
from explorer.charts import exits as charts
from explorer.entry import run_inside_app

run_inside_app()
st.title("Train a model")
st.markdown(
    "Train a small early-exit network here. It runs in the background: you can keep using the other "
    "pages, and the model joins the sidebar's picker when it is done."
)


@dataclass
class JobState:
    """Progress of one background training run, written by its thread and read by the page."""

    name: str
    epochs: int
    step: int = 0
    steps: int = 1
    epoch: int = 0
    history: list = field(default_factory=list)
    log: list = field(default_factory=list)
    path: str | None = None
    error: str | None = None
    done: bool = False
    started: float = field(default_factory=time.time)


@st.cache_resource
def _slots() -> threading.Semaphore:
    """At most one training run at a time on this server (CPU is shared by every session)."""
    return threading.Semaphore(1)


def _worker(job: TrainJob, job_state: JobState, slot: threading.Semaphore) -> None:
    try:

        def on_batch(epoch: int, step: int, steps: int) -> None:
            job_state.epoch, job_state.step, job_state.steps = epoch, step, steps

        path = run_train_job(job, callback=job_state.history.append, on_batch=on_batch, log=job_state.log.append)
        job_state.path = str(path)
    except AepError as e:
        job_state.error = str(e)
    except Exception as e:  # a failed run must end with a message, not a dead thread
        job_state.error = f"Training failed: {type(e).__name__}: {e}"
    finally:
        job_state.done = True
        slot.release()


state = st.session_state
with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    dataset = c1.selectbox(
        "Dataset",
        ["fashion-mnist-slice", "fashion-mnist"],
        key="tr_dataset",
        help="The slice (1000 shipped images) trains in seconds; full Fashion-MNIST needs the Debian package.",
    )
    limit = c1.number_input(
        "Training images (limit)",
        200,
        60000,
        800,
        step=200,
        key="tr_limit",
        help="Only the first N training images are used, so training stays quick.",
    )
    backbone = c2.selectbox("Backbone", ["compact_cnn", "resnet20"], key="tr_backbone")
    method = c2.selectbox(
        "Method",
        list(METHODS),
        index=list(METHODS).index("aep"),
        key="tr_method",
        help="layer-wise trains one exit at a time and needs at least one epoch per exit (5 for compact_cnn).",
    )
    weighting = c3.selectbox(
        "AEP weighting scheme",
        list(SCHEMES),
        index=list(SCHEMES).index("linear"),
        key="tr_weighting",
        format_func=lambda name: SCHEMES[name].label,
        help="How the exits' losses are weighed in training (and the ensemble's start).",
    )
    epochs = c3.slider("Epochs", 1, 10, 3, key="tr_epochs")
    optimizer = c1.selectbox(
        "Optimizer",
        ["adam (lr 0.003)", "sgd (lr 0.05, momentum 0.9)"],
        key="tr_optimizer",
        help="Adam learns faster from a few hundred images; SGD is what the shipped model uses.",
    )
    name = c2.text_input("Model name", "my_model", key="tr_name", help="Letters, digits, - and _ only.")
    submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    job_state = state.get("train_job")
    clean = re.sub(r"[^A-Za-z0-9_-]", "", name)[:40]
    if job_state is not None and not job_state.done:
        st.warning("A training run of yours is still going; wait for it to finish.")
    elif not clean:
        st.error("Give the model a name made of letters, digits, - or _.")
    elif not _slots().acquire(blocking=False):
        st.warning("Another session is training right now (one run at a time on this server). Try again in a minute.")
    else:
        job = TrainJob(
            out=str(trained_dir() / f"{clean}.pt"),
            dataset=dataset,
            limit=int(limit),
            model=backbone,
            method=MethodSettings(method=method, weighting=weighting),
            train=TrainConfig(
                epochs=int(epochs),
                batch_size=64,
                optimizer=optimizer.split()[0],
                lr=0.003 if optimizer.startswith("adam") else 0.05,
                progress=False,
            ),
        )
        job_state = JobState(clean, int(epochs))
        state["train_job"] = job_state
        threading.Thread(target=_worker, args=(job, job_state, _slots()), daemon=True, name=f"train-{clean}").start()

running = state.get("train_job")


def use_model(label: str) -> None:
    state["model"] = label


@st.fragment(run_every=1.0 if running is not None and not running.done else None)
def progress_view() -> None:
    job_state = state.get("train_job")
    if job_state is None:
        st.info(
            "Pick the settings and press **Start training**. The defaults (the shipped 1000-image slice, 3 epochs) "
            "take about a minute on a CPU and reach roughly 40-50% accuracy: a demo of the workflow. The shipped "
            "model was trained on all 60,000 Fashion-MNIST images."
        )
        return
    done_share = (job_state.epoch + job_state.step / max(job_state.steps, 1)) / job_state.epochs
    st.progress(
        min(1.0, done_share if not job_state.done else 1.0),
        text=f"{job_state.name}: epoch {min(job_state.epoch + 1, job_state.epochs)}/{job_state.epochs}, "
        f"step {job_state.step}/{job_state.steps} ({time.time() - job_state.started:.0f} s)",
    )
    if job_state.history:
        latest = job_state.history[-1]
        per_exit = ", ".join(f"exit {k}: **{100 * a:.1f}%**" for k, a in enumerate(latest.val_acc))
        st.markdown(f"Validation accuracy per exit after epoch {latest.epoch}: {per_exit}")
        st.altair_chart(
            charts.training_curve([h.epoch for h in job_state.history], [h.val_acc for h in job_state.history]),
            width="stretch",
        )
    if job_state.error:
        st.error(job_state.error)
    elif job_state.done and job_state.path:
        st.success(f"Saved {job_state.name}. It is now in the sidebar's model picker.")
        label = next((lab for lab, path in model_files().items() if path == job_state.path), job_state.name)
        st.button(f"Use {label} now", on_click=use_model, args=(label,), key="tr_use")
        if state.get("_train_refreshed") != job_state.path:
            state["_train_refreshed"] = job_state.path
            st.rerun()  # a full rerun refreshes the sidebar's model list


progress_view()
