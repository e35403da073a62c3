"""Train: train a small early-exit model from the browser, in a background thread, with live progress;
the result joins the model picker."""
import re
import threading
import time
from dataclasses import dataclass, field

import streamlit as st

import app_shared as shared
from explorer.charts import exits as charts
from aep_core.errors import AepError
from aep_core.training.job import TrainJob, run_train_job
from aep_core.training import METHODS, SCHEMES, MethodSettings, TrainConfig

shared.ensure_entry("train")
st.title("Train a model")
st.markdown("Train a small early-exit network here. It runs in the background: you can keep using the other "
            "pages, and the model joins the sidebar's picker when it is done.")


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


def _worker(job: TrainJob, state: JobState, slot: threading.Semaphore) -> None:
    try:
        def on_batch(epoch: int, step: int, steps: int) -> None:
            state.epoch, state.step, state.steps = epoch, step, steps

        path = run_train_job(job, callback=state.history.append, on_batch=on_batch, log=state.log.append)
        state.path = str(path)
    except AepError as e:
        state.error = str(e)
    except Exception as e:  # noqa: BLE001 - a failed run must end with a message, not a dead thread
        state.error = f"Training failed: {type(e).__name__}: {e}"
    finally:
        state.done = True
        slot.release()


ss = st.session_state
with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    dataset = c1.selectbox("Dataset", ["fashion-mnist-slice", "fashion-mnist"], key="tr_dataset",
                           help="The slice (1000 shipped images) trains in seconds; full Fashion-MNIST needs the Debian package.")
    limit = c1.number_input("Training images (limit)", 200, 60000, 800, step=200, key="tr_limit",
                            help="Only the first N training images are used, so training stays quick.")
    backbone = c2.selectbox("Backbone", ["compact_cnn", "resnet20"], key="tr_backbone")
    method = c2.selectbox("Method", list(METHODS), index=list(METHODS).index("aep"), key="tr_method",
                          help="layer-wise trains one exit at a time and needs at least one epoch per exit "
                               "(5 for compact_cnn).")
    weighting = c3.selectbox("AEP weighting scheme", list(SCHEMES), index=list(SCHEMES).index("linear"), key="tr_weighting")
    epochs = c3.slider("Epochs", 1, 10, 3, key="tr_epochs")
    optimizer = c1.selectbox("Optimizer", ["adam (lr 0.003)", "sgd (lr 0.05, momentum 0.9)"], key="tr_optimizer",
                             help="Adam learns faster from a few hundred images; SGD is what the shipped model uses.")
    name = c2.text_input("Model name", "my_model", key="tr_name", help="Letters, digits, - and _ only.")
    submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    state = ss.get("train_job")
    clean = re.sub(r"[^A-Za-z0-9_-]", "", name)[:40]
    if state is not None and not state.done:
        st.warning("A training run of yours is still going; wait for it to finish.")
    elif not clean:
        st.error("Give the model a name made of letters, digits, - or _.")
    elif not _slots().acquire(blocking=False):
        st.warning("Another session is training right now (one run at a time on this server). Try again in a minute.")
    else:
        job = TrainJob(out=str(shared.trained_dir() / f"{clean}.pt"), dataset=dataset, limit=int(limit), model=backbone,
                       method=MethodSettings(method=method, weighting=weighting),
                       train=TrainConfig(epochs=int(epochs), batch_size=64, optimizer=optimizer.split()[0],
                                         lr=0.003 if optimizer.startswith("adam") else 0.05, progress=False))
        state = JobState(clean, int(epochs))
        ss["train_job"] = state
        threading.Thread(target=_worker, args=(job, state, _slots()), daemon=True, name=f"train-{clean}").start()

state = ss.get("train_job")


def use_model(label: str) -> None:
    ss["model"] = label


@st.fragment(run_every=1.0 if state is not None and not state.done else None)
def progress_view() -> None:
    state = ss.get("train_job")
    if state is None:
        st.info("Pick the settings and press **Start training**. The defaults (the shipped 1000-image slice, 3 epochs) "
                "take about a minute on a CPU and reach roughly 40-50% accuracy: a demo of the workflow. The shipped "
                "model was trained on all 60,000 Fashion-MNIST images.")
        return
    frac = (state.epoch + state.step / max(state.steps, 1)) / state.epochs
    st.progress(min(1.0, frac if not state.done else 1.0),
                text=f"{state.name}: epoch {min(state.epoch + 1, state.epochs)}/{state.epochs}, "
                     f"step {state.step}/{state.steps} ({time.time() - state.started:.0f} s)")
    if state.history:
        h = state.history[-1]
        st.markdown("Validation accuracy per exit after epoch "
                    f"{h.epoch}: " + ", ".join(f"exit {k}: **{100 * a:.1f}%**" for k, a in enumerate(h.val_acc)))
        st.altair_chart(charts.training_curve([x.epoch for x in state.history], [x.val_acc for x in state.history]),
                        width="stretch")
    if state.error:
        st.error(state.error)
    elif state.done and state.path:
        st.success(f"Saved {state.name}. It is now in the sidebar's model picker.")
        label = next((lab for lab, p in shared.discover_models().items() if p == state.path), state.name)
        st.button(f"Use {label} now", on_click=use_model, args=(label,), key="tr_use")
        if not ss.get("_train_refreshed") == state.path:
            ss["_train_refreshed"] = state.path
            st.rerun()  # a full rerun refreshes the sidebar's model list


progress_view()
