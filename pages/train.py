"""Train: train a small early-exit model from the browser, in a background thread, with live progress;
the result joins the model picker."""

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from aep_core.errors import AepError
from aep_core.training import METHODS, SCHEMES, MethodSettings, TrainConfig
from aep_core.training.estimate import RunEstimate, estimate_run, format_seconds, record_run
from aep_core.training.job import TrainJob, run_train_job
from aep_core.training.names import NameClaim, NameTaken, claim_name, clean_model_name
from aep_core.uploads import (
    ExtractedFolder,
    UploadLimits,
    archive_digest,
    extract_image_folder,
    hold_upload,
    release_upload,
    remove_old_uploads,
    remove_upload,
    uploads_dir,
)
from explorer import glossary
from explorer.catalog import model_files, reserved_names, trained_dir
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
    replaces: bool = False  # a finished model of this name is being replaced, as the user confirmed
    estimate: RunEstimate | None = None  # set before training starts
    seconds: float | None = None  # measured duration of the run itself


@st.cache_resource
def _slots() -> threading.Semaphore:
    """At most one training run at a time on this server (CPU is shared by every session)."""
    return threading.Semaphore(1)


def _worker(job: TrainJob, job_state: JobState, slot: threading.Semaphore, claim: NameClaim) -> None:
    try:

        def on_batch(epoch: int, step: int, steps: int) -> None:
            job_state.epoch, job_state.step, job_state.steps = epoch, step, steps

        job_state.estimate = estimate_run(claim.folder, job)
        t0 = time.perf_counter()
        path = run_train_job(job, callback=job_state.history.append, on_batch=on_batch, log=job_state.log.append)
        job_state.seconds = time.perf_counter() - t0
        job_state.path = str(path)
        try:
            record_run(claim.folder, job, job_state.seconds, path)
        except (OSError, AepError) as e:  # the model is saved; only future estimates miss this run
            job_state.log.append(f"could not record the run in the run log: {e}")
    except AepError as e:
        job_state.error = str(e)
    except Exception as e:  # a failed run must end with a message, not a dead thread
        job_state.error = f"Training failed: {type(e).__name__}: {e}"
    finally:
        if job.dataset == "folder":
            release_upload(job.data_dir)
        claim.release()
        slot.release()
        job_state.done = True


def use_name(name: str) -> None:
    st.session_state["tr_name"] = name
    st.session_state["_tr_name_note"] = name


def upload_root() -> Path:
    """The app's folder for uploaded data, beside the trained models: AEP_APP_DATA_DIR if set."""
    return uploads_dir(trained_dir().parent / "uploads")


def uploaded_folder() -> ExtractedFolder | None:
    """The image folder of this session's zip upload, extracted once per archive and shown with its classes;
    None (with the reason shown) until there is a good one."""
    limits = UploadLimits()
    upload = st.file_uploader(
        "Image folder (zip)",
        type=["zip"],
        key="tr_upload",
        help="A zip of a folder with one sub-folder of images per class (optionally inside one top folder): at least "
        f"{limits.min_classes} classes and {limits.min_images_per_class} images per class, PNG, JPEG, BMP, PPM/PGM, "
        "TIFF or WebP. Other files are skipped.",
    )
    kept: ExtractedFolder | None = state.get("tr_folder")
    data = upload.getvalue() if upload is not None else b""
    digest = archive_digest(data)
    if kept is not None and (kept.digest != digest or not kept.path.is_dir()):
        remove_upload(kept.path, upload_root())  # this session's earlier upload, unless a run reads it
        kept = state["tr_folder"] = None
    if upload is None:
        return None
    if kept is None:
        refused = state.get("tr_folder_refused")
        if refused is not None and refused[0] == digest:
            st.error(refused[1])
            return None
        remove_old_uploads(upload_root())
        try:
            with st.spinner("Checking the archive and its images..."):
                kept = state["tr_folder"] = extract_image_folder(data, upload_root(), limits)
        except AepError as e:
            state["tr_folder_refused"] = (digest, str(e))
            st.error(str(e))
            return None
    st.success(f"{kept.images} images in {len(kept.classes)} classes.")
    st.dataframe({"class": kept.classes, "images": list(kept.counts.values())}, hide_index=True)
    if kept.skipped:
        plural = "s" if kept.skipped_total != 1 else ""
        st.warning(f"Skipped {kept.skipped_total} file{plural} of the archive: {kept.skipped_text()}.")
    return kept


state = st.session_state
DATASET_LABELS = {"folder": "Image folder (zip upload)"}
dataset = st.selectbox(
    "Dataset",
    ["fashion-mnist-slice", "fashion-mnist", "folder"],
    key="tr_dataset",
    format_func=lambda name: DATASET_LABELS.get(name, name),
    help="The slice (1000 shipped images) trains in seconds; full Fashion-MNIST needs the Debian package; an "
    "image folder is uploaded as a zip.",
)
folder = uploaded_folder() if dataset == "folder" else None
with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
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
        help=glossary.help_text(
            "AEP",
            "EENet",
            lead="layer-wise trains one exit at a time and needs at least one epoch per exit (5 for compact_cnn).",
        ),
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
    image_size, in_channels = 32, 3  # what TrainJob uses for datasets that are not folders
    if dataset == "folder":
        image_size = c1.selectbox(
            "Image size", [16, 28, 32, 64], index=2, key="tr_image_size", help="Images are resized to this square."
        )
        in_channels = c2.selectbox(
            "Channels", [3, 1], key="tr_channels", format_func=lambda c: "RGB" if c == 3 else "grayscale"
        )
    replace_existing = c3.checkbox(
        "Replace a model of this name",
        key="tr_replace",
        help="Without this, a name that is taken is refused and a free one is offered. A model that is being "
        "trained right now is never replaced.",
    )
    submitted = st.form_submit_button("Start training", type="primary")


def job_for(out: str) -> TrainJob:
    """The run the form describes, writing to `out`."""
    return TrainJob(
        out=out,
        dataset=dataset,
        data_dir=str(folder.path) if folder is not None else None,
        limit=int(limit),
        image_size=int(image_size),
        in_channels=int(in_channels),
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


def start_run() -> None:
    """Claim the name and start the form's run in the background, or say why not."""
    current = state.get("train_job")
    if current is not None and not current.done:
        st.warning("A training run of yours is still going; wait for it to finish.")
        return
    if dataset == "folder" and (folder is None or not folder.path.is_dir()):
        st.error("Upload a zip of an image folder first (one sub-folder of images per class).")
        return
    try:
        claim = claim_name(trained_dir(), clean_model_name(name), replace=replace_existing, reserved=reserved_names())
    except NameTaken as e:
        hint = " Tick **Replace a model of this name** to overwrite it." if e.state == "exists" else ""
        st.error(f"{e}{hint}")
        st.button(f"Use the name {e.suggestion}", on_click=use_name, args=(e.suggestion,), key="tr_use_free")
        return
    except AepError as e:
        st.error(str(e))
        return
    if not _slots().acquire(blocking=False):
        claim.release()
        st.warning("Another session is training right now (one run at a time on this server). Try again in a minute.")
        return
    job_state = JobState(claim.name, int(epochs), replaces=claim.replaces)
    state["train_job"] = job_state
    job = job_for(str(trained_dir() / f"{claim.name}.pt"))
    if job.dataset == "folder":
        hold_upload(job.data_dir)  # kept on disk until the run ends
    worker_args = (job, job_state, _slots(), claim)
    threading.Thread(target=_worker, args=worker_args, daemon=True, name=f"train-{claim.name}").start()


if submitted:
    start_run()
elif state.pop("_tr_name_note", None) == name:
    st.info(f"The name is now **{name}**; press **Start training** to train it.")

running = state.get("train_job")


def use_model(label: str) -> None:
    state["model"] = label


@st.fragment(run_every=1.0 if running is not None and not running.done else None)
def progress_view() -> None:
    job_state = state.get("train_job")
    if job_state is None:
        expected = estimate_run(trained_dir(), job_for(str(trained_dir() / "unnamed.pt")), measure=False)
        st.info(
            "Pick the settings and press **Start training**. Time and accuracy are measured, not promised. "
            f"For the settings last submitted (at first, the defaults): {expected.time_text()} "
            f"{expected.accuracy_text()} A busier server takes longer. The shipped model was trained on all "
            "60,000 Fashion-MNIST images."
        )
        return
    done_share = (job_state.epoch + job_state.step / max(job_state.steps, 1)) / job_state.epochs
    st.progress(
        min(1.0, done_share if not job_state.done else 1.0),
        text=f"{job_state.name}: epoch {min(job_state.epoch + 1, job_state.epochs)}/{job_state.epochs}, "
        f"step {job_state.step}/{job_state.steps} ({time.time() - job_state.started:.0f} s)",
    )
    if job_state.estimate is None and not job_state.done:
        st.caption("Timing a few training batches of these settings to estimate the duration...")
    elif job_state.estimate is not None:
        st.caption(f"Expected: {job_state.estimate.time_text()} {job_state.estimate.accuracy_text()}")
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
        took = f" in {format_seconds(job_state.seconds)}" if job_state.seconds is not None else ""
        replaced = " (it replaced the earlier model of that name)" if job_state.replaces else ""
        st.success(f"Saved {job_state.name}{took}{replaced}. It is now in the sidebar's model picker.")
        label = next((lab for lab, path in model_files().items() if path == job_state.path), job_state.name)
        st.button(f"Use {label} now", on_click=use_model, args=(label,), key="tr_use")
        if state.get("_train_refreshed") != job_state.path:
            state["_train_refreshed"] = job_state.path
            st.rerun()  # a full rerun refreshes the sidebar's model list


progress_view()
