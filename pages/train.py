"""Train: train a small early-exit model, or exits on a torchvision classifier starting from the user's weights
(checked before the run starts), from the browser, in a background thread, with live progress; the result joins the
model picker."""

import json
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from aep_core.cost import exit_costs
from aep_core.data import FASHION_MNIST_CLASSES, DataBundle
from aep_core.errors import AepError
from aep_core.models.placement import place_exits
from aep_core.models.torchvision_backbones import FAMILIES, TorchvisionBackbone, supported_archs
from aep_core.training import METHODS, SCHEMES, MethodSettings, TrainConfig, build_method
from aep_core.training.estimate import RunEstimate, estimate_run, format_seconds, record_run
from aep_core.training.job import TrainJob, build_for_job, run_train_job
from aep_core.training.names import NameClaim, NameTaken, claim_name, clean_model_name
from aep_core.uploads import (
    MIB,
    ExtractedFolder,
    UploadError,
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
    "Train a small early-exit network here, or exits on a torchvision classifier starting from your own weights. "
    "It runs in the background: you can keep using the other "
    "pages, and the model joins the sidebar's picker when it is done."
)

MAX_WEIGHTS_MIB = 600
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
BACKBONE_LABELS = {"torchvision": "torchvision classifier"}
FAMILY_OF = {arch: spec.name for spec in FAMILIES.values() for arch in spec.archs}
WEIGHT_SOURCES = {
    "random": "random initialisation",
    "file": "my weights file (.pt/.pth state_dict)",
    "pretrained": "torchvision pretrained (if on this server)",
}
TRAINING_MODES = {
    "frozen": "Frozen backbone (classifier-wise)",
    "joint": "Joint fine-tuning (AEP loss)",
    "backbone_first": "Backbone first, then joint",
}


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


def _worker(
    job: TrainJob, job_state: JobState, slot: threading.Semaphore, claim: NameClaim, held: tuple[Path, ...]
) -> None:
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
        for path in held:
            release_upload(path)
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
        max_upload_size=limits.max_archive_bytes // 2**20,
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


def weights_root() -> Path:
    """The folder uploaded weights files go to, one sub-folder per upload."""
    return upload_root() / "weights"


def weights_file_name(name: str) -> str:
    """A safe file name keeping the readable part of the uploaded one and its .pt / .pth suffix."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(name).stem).strip("._")[:80] or "weights"
    suffix = Path(name).suffix.lower()
    return stem + (suffix if suffix in (".pt", ".pth") else ".pt")


@dataclass(frozen=True)
class WeightsUpload:
    """A weights file uploaded in this session, saved in a folder of its own under the app's data folder."""

    path: Path
    file_id: str  # the uploader's id of the file it was saved from


def save_weights(data: bytes, name: str, file_id: str) -> WeightsUpload:
    """Write uploaded weights to a new folder of their own (no two uploads share one, so sessions uploading files
    of the same name never meet); UploadError when the file is too large or cannot be written."""
    if len(data) > MAX_WEIGHTS_MIB * MIB:
        raise UploadError(
            f"The weights file is {len(data) / MIB:.0f} MiB; at most {MAX_WEIGHTS_MIB} MiB can be uploaded."
        )
    root = weights_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{archive_digest(data)[:16]}-", dir=root))
    except OSError as e:
        raise UploadError(f"Cannot create a folder for the weights file in {root}: {e}") from None
    path = folder / weights_file_name(name)
    try:
        path.write_bytes(data)
    except OSError as e:
        remove_upload(folder, root)
        raise UploadError(f"Cannot save the weights file in {root}: {e}") from None
    return WeightsUpload(path, file_id)


def uploaded_weights() -> WeightsUpload | None:
    """This session's uploaded weights file, saved once per upload; None (with the reason shown) until there is
    one. It is only ever read as weights (no pickled code runs)."""
    upload = st.file_uploader(
        "Weights file (.pt / .pth)",
        type=["pt", "pth"],
        key="tr_weights_upload",
        max_upload_size=MAX_WEIGHTS_MIB,
        help="A state_dict of the torchvision model, as `torch.save(model.state_dict(), 'my.pt')` writes it (also "
        "inside a dict under 'state_dict' or 'model'). It is read with weights_only: a file holding code is refused.",
    )
    kept: WeightsUpload | None = state.get("tr_weights_file")
    file_id = upload.file_id if upload is not None else ""
    if kept is not None and (kept.file_id != file_id or not kept.path.is_file()):
        remove_upload(kept.path.parent, weights_root())  # this session's earlier file, unless a run reads it
        kept = state["tr_weights_file"] = None
    if upload is None:
        return None
    if kept is None:
        remove_old_uploads(weights_root())
        try:
            kept = state["tr_weights_file"] = save_weights(upload.getvalue(), upload.name, file_id)
        except AepError as e:
            st.error(str(e))
            return None
    return kept


@dataclass(frozen=True)
class ExitPoints:
    """Where early exits can go on a torchvision classifier: after any block but the last (the network's own
    classifier reads that one), and the blocks the 'stages' placement picks."""

    names: list[str]
    stages: list[str]


@st.cache_resource(max_entries=16, show_spinner="Reading the network's blocks...")
def exit_points(arch: str, in_channels: int) -> ExitPoints:
    """The exit points of torchvision classifier `arch`, from its backbone built once per (arch, channels); only
    the names are kept, not the network."""
    backbone = TorchvisionBackbone(arch, in_channels)
    names, last = backbone.block_names, len(backbone.block_names) - 1
    return ExitPoints(names[:last], [names[b] for b in place_exits("stages", backbone.block_stage) if b < last])


def pretrained_names(arch: str) -> list[str]:
    """torchvision's names of the pretrained weights of `arch`, DEFAULT first."""
    from torchvision import models

    return ["DEFAULT", *(w.name for w in models.get_model_weights(arch))]


@dataclass
class TorchvisionChoice:
    """The torchvision settings picked above the form."""

    arch: str
    source: str  # a key of WEIGHT_SOURCES
    weights: str | None  # TrainJob.weights: the saved file, or torchvision's weights name
    upload: WeightsUpload | None
    mode: str | None  # a key of TRAINING_MODES, None when the backbone starts from random weights
    backbone_epochs: int
    box: DeltaGenerator  # the container the weights check is shown in


def torchvision_choice() -> TorchvisionChoice:
    """Architecture, starting weights and training mode of a torchvision backbone."""
    archs = supported_archs()
    c1, c2 = st.columns(2)
    arch = c1.selectbox(
        "Architecture",
        archs,
        index=archs.index("mobilenet_v3_small"),
        key="tr_arch",
        format_func=lambda a: f"{a} ({FAMILY_OF[a]})",
        help="A torchvision classifier: its blocks carry the exits, its own classifier is the final exit.",
    )
    source = c2.radio("Backbone weights", list(WEIGHT_SOURCES), key="tr_weights_source", format_func=WEIGHT_SOURCES.get)
    upload, weights = None, None
    if source == "file":
        upload = uploaded_weights()
        weights = str(upload.path) if upload is not None else None
    elif source == "pretrained":
        weights = c1.selectbox(
            "Pretrained weights",
            pretrained_names(arch),
            key=f"tr_pretrained_{arch}",
            help="Read from the torch cache on this server, if they are there; nothing is downloaded.",
        )
    box = st.container()
    mode, backbone_epochs = None, 0
    if source != "random":
        mode = st.radio(
            "Training mode",
            list(TRAINING_MODES),
            key="tr_mode",
            format_func=TRAINING_MODES.get,
            horizontal=True,
            help="Frozen: the backbone keeps its weights (BatchNorm statistics included) and only the exits learn, "
            "the cheapest. Joint: every exit and the backbone learn together with the AEP loss. Backbone first: "
            "the backbone and final classifier learn alone for some epochs, then everything jointly.",
        )
        if mode == "backbone_first":
            backbone_epochs = int(
                st.number_input(
                    "Backbone-first epochs",
                    1,
                    9,
                    1,
                    key="tr_backbone_epochs",
                    help="Fewer than the run's epochs: the rest train every exit jointly.",
                )
            )
    return TorchvisionChoice(arch, source, weights, upload, mode, backbone_epochs, box)


def data_channels(dataset: str, folder_channels: int) -> int:
    """The channels of a dataset's images: Fashion-MNIST's are grey, a folder's are what the form asks."""
    return folder_channels if dataset == "folder" else 1


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
backbone = st.selectbox(
    "Backbone",
    ["compact_cnn", "resnet20", "torchvision"],
    key="tr_backbone",
    format_func=lambda name: BACKBONE_LABELS.get(name, name),
    help="compact_cnn and resnet20 are small networks made for 28-32 px images; a torchvision classifier (ResNet, "
    "MobileNet, EfficientNet, ...) can start from your own weights.",
)
tv = torchvision_choice() if backbone == "torchvision" else None
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
    method = "aep"
    if tv is None or tv.mode is None:
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
    imagenet_norm = False
    if dataset == "folder":
        image_size = c1.selectbox(
            "Image size",
            [16, 28, 32, 64, 96, 128, 224],
            index=2,
            key="tr_image_size",
            help="Images are resized to this square.",
        )
        in_channels = c2.selectbox(
            "Channels", [3, 1], key="tr_channels", format_func=lambda c: "RGB" if c == 3 else "grayscale"
        )
        if tv is not None and tv.source == "file":
            imagenet_norm = c3.checkbox(
                "ImageNet mean and std",
                True,
                key="tr_imagenet_norm",
                help="Normalise the images as ImageNet-pretrained weights expect; unticked: 0.5 per channel.",
            )
    exits: list[str] = []
    if tv is not None:
        points = exit_points(tv.arch, data_channels(dataset, in_channels))
        exits = st.multiselect(
            "Early exits after",
            points.names,
            default=points.stages,
            key=f"tr_exits_{tv.arch}",
            help="The blocks an early exit follows (the network's own classifier is always the final exit). By "
            "default one per stage, where the resolution drops; none picked: the same.",
        )
        exits = sorted(exits, key=points.names.index)
    replace_existing = c3.checkbox(
        "Replace a model of this name",
        key="tr_replace",
        help="Without this, a name that is taken is refused and a free one is offered. A model that is being "
        "trained right now is never replaced.",
    )
    submitted = st.form_submit_button("Start training", type="primary")


def method_settings() -> MethodSettings:
    """The method the form describes: a torchvision training mode's, else the one picked."""
    if tv is not None and tv.mode == "frozen":
        return MethodSettings(method="classifier-wise", weighting=weighting, freeze_epochs=0)
    if tv is not None and tv.mode is not None:
        return MethodSettings(method="aep", weighting=weighting, backbone_epochs=tv.backbone_epochs)
    return MethodSettings(method=method, weighting=weighting)


def normalisation() -> tuple[list[float] | None, list[float] | None]:
    """The image folder's per-channel mean and std (None: the default)."""
    if not imagenet_norm:
        return None, None
    if in_channels == 1:
        return [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]
    return IMAGENET_MEAN, IMAGENET_STD


def job_for(out: str) -> TrainJob:
    """The run the form describes, writing to `out`."""
    mean, std = normalisation()
    return TrainJob(
        out=out,
        dataset=dataset,
        data_dir=str(folder.path) if folder is not None else None,
        limit=int(limit),
        image_size=int(image_size),
        in_channels=int(in_channels),
        model=backbone,
        model_config={"arch": tv.arch} if tv is not None else {},
        placement=(exits or "stages") if tv is not None else "blocks",
        weights=tv.weights if tv is not None else None,
        mean=mean,
        std=std,
        method=method_settings(),
        train=TrainConfig(
            epochs=int(epochs),
            batch_size=64,
            optimizer=optimizer.split()[0],
            lr=0.003 if optimizer.startswith("adam") else 0.05,
            progress=False,
        ),
    )


@dataclass(frozen=True)
class Preflight:
    """Whether the form's run can start: the message of what stops it, else whether the weights' classifier is
    kept as the final exit."""

    error: str | None
    classifier_kept: bool = False


def data_shape(job: TrainJob) -> DataBundle | None:
    """The channels, image side and classes the job's data will have, without its images; None while an image
    folder is still to be uploaded."""
    if job.dataset == "folder":
        if folder is None:
            return None
        classes, channels, side = folder.classes, job.in_channels, job.image_size
    else:
        classes, channels, side = FASHION_MNIST_CLASSES, 1, 28
    half = [0.5] * channels
    return DataBundle(job.dataset, [], [], [], list(classes), channels, side, half, half)


def preflight(job: TrainJob) -> Preflight:
    """Build the job's model as the run will, loading its weights (weights only), and bind its method, so that what
    would fail in training is refused before it starts; cached per settings in the session."""
    shape = data_shape(job)
    if shape is None:
        return Preflight(None)
    settings = {k: v for k, v in asdict(job).items() if k != "out"}
    key = json.dumps([settings, shape.class_names], sort_keys=True, default=str)
    cached = state.get("_tr_preflight")
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        with st.spinner("Building the model and checking its weights..."):
            model, _ = build_for_job(job, shape)
            costs = exit_costs(model, (shape.in_channels, shape.image_size, shape.image_size))
            build_method(job.method, model, [e.macs_fraction for e in costs.exits], job.train.epochs)
        result = Preflight(None, bool(model.final_pretrained))
    except AepError as e:
        result = Preflight(str(e))
    except (RuntimeError, ValueError) as e:  # e.g. images too small for the network's downsampling
        result = Preflight(f"The model cannot be built with these settings: {str(e).splitlines()[0]}")
    state["_tr_preflight"] = (key, result)
    return result


def show_weights_check() -> Preflight | None:
    """Check the chosen weights against the form's model and say so above the form (None: nothing to check)."""
    if tv is None or tv.weights is None:
        return None
    job = job_for(str(trained_dir() / "unnamed.pt"))
    check = preflight(job)
    with tv.box:
        if data_shape(job) is None:
            st.caption("The weights are checked against the model once the image folder is uploaded.")
        elif check.error:
            st.error(check.error)
        elif check.classifier_kept:
            st.success(
                f"The weights fit {tv.arch}: training starts from them, and their classifier is kept as the final "
                "exit (same number of classes)."
            )
        else:
            st.info(
                f"The weights fit {tv.arch}: training starts from them. Their classifier predicts another number of "
                "classes, so the final classifier is trained new."
            )
    return check


weights_check = show_weights_check()


def held_uploads() -> tuple[Path, ...]:
    """The uploaded folders the form's run reads: its image folder, its weights file's folder."""
    held = []
    if dataset == "folder" and folder is not None:
        held.append(folder.path)
    if tv is not None and tv.source == "file" and tv.upload is not None:
        held.append(tv.upload.path.parent)
    return tuple(held)


def start_run() -> None:
    """Claim the name and start the form's run in the background, or say why not."""
    current = state.get("train_job")
    if current is not None and not current.done:
        st.warning("A training run of yours is still going; wait for it to finish.")
        return
    if dataset == "folder" and (folder is None or not folder.path.is_dir()):
        st.error("Upload a zip of an image folder first (one sub-folder of images per class).")
        return
    if tv is not None and tv.source == "file" and tv.upload is None:
        st.error("Upload a weights file first, or start from random initialisation.")
        return
    check = preflight(job_for(str(trained_dir() / "unnamed.pt")))
    if check.error:
        if weights_check is None:  # otherwise it is shown above the form already
            st.error(check.error)
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
    held = held_uploads()
    for path in held:
        hold_upload(path)  # kept on disk until the run ends
    worker_args = (job, job_state, _slots(), claim, held)
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
