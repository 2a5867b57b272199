"""One typed settings object, read from ``configs/*.toml`` and overridden by flags and env."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from retrieval.errors import ClipdexError
from retrieval.names import check_collection

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"

ChannelMean = Annotated[float, Field(ge=-1, le=2)]
"""A pixel normalisation mean (pixels are 0..1)."""
ChannelStd = Annotated[float, Field(gt=0, le=10)]
"""A pixel normalisation standard deviation."""


class _Section(BaseModel):
    # Each field's docstring is its documentation: retrieval.config_doc reads them from the source (pydantic's
    # use_attribute_docstrings would parse the source at every start of every command).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    """``allow_inf_nan=False``: every float setting, in every section and in lists, refuses ``inf``, ``-inf``
    and ``nan`` (TOML has all three). Every number also has an upper bound (tests/test_settings.py checks that
    each one has), so ``1e308`` cannot switch a cap off either."""


class ModelSettings(_Section):
    """Which open_clip model embeds images and texts."""

    name: str = "ViT-B-32"
    """An open_clip architecture (``open_clip.list_models()``) or ``local-dir:PATH`` (a folder
    with ``open_clip_config.json`` and ``open_clip_model.safetensors``)."""
    pretrained: str = "laion2b_s34b_b79k"
    """A pretrained tag open_clip can download, a local checkpoint file, or "" for random weights."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when available, else the CPU; or cpu, cuda."""
    precision: Literal["auto", "fp32", "int8", "bf16", "fp16"] = "auto"
    """auto: fp16 autocast on CUDA; on a CPU bf16 images where it has AMX or AVX512-BF16, else int8 (texts
    int8); fp32; int8 (CPU only); bf16 (bf16 weights, fast with AMX or AVX512-BF16 only); fp16 (CUDA only);
    retrieval.model.precision."""
    engine: Literal["auto", "onnx", "torch"] = "auto"
    """What runs queries: auto = ONNX Runtime where the model exports (else torch, with one line saying why);
    onnx = ONNX Runtime or an error; torch. Ingest: see ingest_engine. See retrieval.model.loader."""
    ingest_engine: Literal["auto", "torch", "openvino"] = "auto"
    """What runs the image tower of an ingest: auto = torch on every CPU measured so far (OpenVINO did not win in
    every round on a quiet machine); openvino = OpenVINO from the model's ONNX export, at bf16 or fp32 (the
    openvino package, extra clipdex[openvino]), or an error line; torch. See retrieval.model.ingest_engine."""
    batch_size: int = Field(64, ge=1, le=4096)
    """Images per encoder batch (ingest and eval)."""
    label: str = ""
    """Free text shown by ``status`` and ``demo`` (e.g. to say the weights are a tiny demo model)."""


class StoreSettings(_Section):
    """Where vectors live: an embedded directory (default) or a Qdrant server URL."""

    path: str = "~/.local/share/clipdex/store"
    """The embedded store's directory (env ``CLIPDEX_STORE``, flag ``--store``)."""
    url: str = ""
    """A Qdrant server instead of the embedded store, e.g. ``http://host:6333`` (env ``CLIPDEX_QDRANT_URL``)."""
    api_key: str = ""
    """The Qdrant server's API key (env ``CLIPDEX_QDRANT_API_KEY``)."""
    collection: str = "images"
    """The collection's name (a folder of the embedded store; flag ``--collection``): 1-64 letters, digits,
    '.', '_' or '-', starting with a letter or digit."""
    hnsw_ef: int = Field(128, ge=4, le=4096)
    """HNSW search candidates per query: higher = better recall, slower search."""
    hnsw_m: int = Field(16, ge=4, le=128)
    """HNSW edges per node (applied when a collection is created)."""
    hnsw_ef_construct: int = Field(100, ge=4, le=4096)
    """HNSW build candidates: higher = better recall, slower build (at create)."""
    quantization: Literal["none", "int8"] = "none"
    """int8 scalar quantization of the vectors held in RAM (at create); searches rescore with the originals."""
    quantization_rescore: bool = True
    """With quantization: rescore the candidates with the original vectors."""
    quantization_oversampling: float = Field(2.0, ge=1.0, le=16.0)
    """With quantization: fetch this many times the limit before rescoring."""
    on_disk_vectors: bool = True
    """Keep the original vectors on disk, memory-mapped and read on demand (the OS caches them while RAM is
    free), instead of loading them whole at open (at create). Measured: a lower peak at scale and a faster
    open, see docs/benchmarks.md, "Store at scale"."""
    index_threshold: int = Field(20000, ge=0, le=1_000_000_000)
    """The embedded store builds its HNSW index only once this many points are unindexed; until then
    those points are searched exactly (a full scan of the small unindexed segments)."""
    vector_datatype: Literal["float16", "float32"] = "float16"
    """How a new collection stores its vectors: float16 halves their memory and disk (cosines within 5e-4)."""
    segment_points: int = Field(100_000, ge=1000, le=1_000_000_000)
    """A new collection's segments hold at most this many points. The embedded store seals a segment
    and builds its HNSW graph as soon as it is full, so an ingest keeps one segment's payload indexes in
    RAM at most (see docs/scale.md)."""
    seal_points: int | None = Field(None, ge=1000, le=1_000_000_000)
    """No longer used (segments are sealed when full, see ``segment_points``); accepted so that configs
    written for the previous release still load."""
    shard_number: int = Field(0, ge=0, le=1024)
    """Qdrant server/cluster: shards of a new collection (0 = the server's default: one per node)."""
    replication_factor: int = Field(0, ge=0, le=64)
    """Qdrant cluster: copies of each shard of a new collection (0 = the server's default, 1)."""
    write_consistency_factor: int = Field(0, ge=0, le=64)
    """Qdrant cluster: replicas that must acknowledge a write (0 = the server's default, 1)."""

    _collection = field_validator("collection")(classmethod(lambda cls, v: check_collection(v)))


class IngestSettings(_Section):
    """How folders are walked and images decoded."""

    workers: int = Field(2, ge=0, le=64)
    """Decoder processes that hash, decode and preprocess (0 = decode in the main process)."""
    include: list[str] = []
    """Only files matching one of these globs (relative path or file name; ``**`` spans folders)."""
    exclude: list[str] = []
    """Skip files and folders matching one of these globs."""
    follow_symlinks: bool = False
    """Descend into symlinked folders (each real file is listed once)."""
    skip_hidden: bool = True
    """Skip hidden (dot) files and folders."""
    max_megapixels: float = Field(64.0, gt=0, le=1000)
    """Refuse images with more pixels than this (checked from the header before decoding)."""
    file_timeout_s: float = Field(30.0, gt=0, le=3600)
    """Wall-time budget to read and decode one file; slower files are listed as failed."""
    upsert_batch: int = Field(256, ge=1, le=65536)
    """Points per store request when reusing vectors, deleting, and looking up stored points."""
    max_delete_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """A run that would delete more than this fraction of the points below a root deletes nothing
    there until it is confirmed with ``--prune``."""
    video: bool = True
    """Also ingest videos (mp4, mov, m4v, mkv, webm, avi, 3gp, mts, m2ts): one point per moment, see
    ``[video]`` and docs/video.md (``ingest --no-video`` overrides)."""


class VideoSettings(_Section):
    """``[video]``: how videos are sampled into moments, and the limits per file (docs/video.md)."""

    max_gap_s: float = Field(10.0, gt=0, le=3600)
    """A long shot gets one moment every this many seconds (each shot gets at least one)."""
    probe_s: float = Field(0.5, gt=0, le=60)
    """Where keyframes are sparse, frames this far apart are compared to find shot cuts."""
    keyframe_gap_s: float = Field(2.0, ge=0, le=60)
    """Decode keyframes only when no two keyframes are further apart than this (else every frame is decoded
    and one per ``probe_s`` compared)."""
    cut_threshold: float = Field(0.08, gt=0, le=1)
    """A shot cut: the mean absolute difference of two small grey frames (0..1) above this."""
    merge_cosine: float = Field(0.97, ge=0, le=1.0001)
    """Neighbouring moments whose vectors are at least this similar become one moment."""
    max_seconds: float = Field(14400.0, gt=0, le=1e7)
    """Only the first this many seconds of a video are sampled (a longer one is kept, marked truncated)."""
    max_frames: int = Field(200_000, ge=1, le=10**9)
    """Decoded frames per file at most (the moments up to there are kept, marked truncated)."""
    max_gigapixels: float = Field(400.0, gt=0, le=1e6)
    """Decoded pixels per file at most, in 10^9 (the moments up to there are kept, marked truncated)."""
    time_s: float = Field(600.0, gt=0, le=86400)
    """Wall time per file at most (the moments up to there are kept, marked truncated)."""
    max_moments: int = Field(2000, ge=1, le=100_000)
    """Moments per video at most (all of a video's moments are written in one store request)."""


class RaySettings(_Section):
    """``clipdex ingest --ray``: where the Ray cluster is and how the encoder pool is sized."""

    address: str = ""
    """"" = ingest in this process; "auto" = join the running cluster (``ray start --head``); "local" = start
    one in-process; or a cluster address (``HOST:6379``, ``ray://HOST:10001``)."""
    encoders: int = Field(0, ge=0, le=4096)
    """Encoder actors (0 = one per GPU where the cluster has GPUs, else one per ``encoder_cpus`` x 2 CPUs)."""
    encoder_cpus: float = Field(1.0, gt=0, le=256)
    """CPUs each CPU encoder actor reserves (its torch threads: this, rounded up)."""
    decode_cpus: float = Field(1.0, gt=0, le=64)
    """CPUs each hash/decode/preprocess task reserves."""
    decode_batch: int = Field(16, ge=1, le=4096)
    """Files per hash/decode/preprocess task."""
    max_restarts: int = Field(3, ge=0, le=1000)
    """How often a dead encoder actor is restarted (its unfinished batches are retried as often)."""
    object_store_mb: int = Field(0, ge=0, le=1 << 24)
    """Object store size of a ``local`` cluster (0 = Ray's default)."""


class SearchSettings(_Section):
    """Defaults of ``clipdex search`` and ``GET /api/search``."""

    limit: int = Field(10, ge=1, le=10000)
    """Results per search when ``--limit`` (``limit=``) is not given."""
    fetch_max_mb: float = Field(32.0, gt=0, le=1024)
    """``clipdex search --image URL``: the largest image fetched (the download stops past it). ``serve`` never
    fetches URLs."""
    fetch_timeout_s: float = Field(20.0, gt=0, le=600)
    """``clipdex search --image URL``: the time limit of the whole fetch."""
    cutoff: Literal["none", "auto"] = "none"
    """auto: return only the hits that stand out from the query's own score distribution (``--relevant``,
    retrieval/search/cutoff.py); none: the ``limit`` best."""
    hybrid: bool = True
    """On a collection with OCR text, fuse CLIP with BM25 over the recognised text (``--no-ocr``: CLIP only)."""


class OcrSettings(_Section):
    """``[ocr]``: read the text in images after the CLIP pass (``ingest --ocr``); see docs/ocr.md."""

    enabled: bool = False
    """Run the OCR pass after every ingest and ``serve --watch`` sync (``ingest --ocr/--no-ocr`` overrides)."""
    det_max_side: int = Field(640, ge=64, le=4096)
    """Text detection sees the picture at most this large (the bound on its cost per image)."""
    rec_max_side: int = Field(1600, ge=64, le=8192)
    """Found boxes are cut out of the picture at up to this size for recognition (small print)."""
    max_boxes: int = Field(50, ge=1, le=1000)
    """Recognise at most this many text boxes per image (the largest)."""
    min_score: float = Field(0.5, ge=0.0, le=1.0)
    """Drop recognised lines the model is less sure of."""
    use_cls: bool = True
    """Turn upside-down text upright (0/180° classifier) before recognising it."""
    timeout_s: float = Field(20.0, gt=0, le=600)
    """Wall time allowed per image (decode + OCR); a slower image is reported and skipped."""
    video_frames: int = Field(32, ge=1, le=2000)
    """Per video: read the frames of at most this many of its moments (spread over its length), each within
    ``timeout_s``, and all of them within 4 × ``timeout_s``; a moment not read gets no text."""


class ServeSettings(_Section):
    """``clipdex serve``: its API key, decode budget and thumbnail cache, and the folders it keeps in sync
    while serving (``--watch``); see docs/serve.md."""

    watch: list[str] = []
    """Folders ingested at start and then on every file-system change (relative to the config file)."""
    rescan_interval_s: float = Field(600.0, ge=0, le=7 * 86400)
    """Full re-sync of every watched folder this often, for changes no event reports (network drives); 0 = never."""
    debounce_s: float = Field(1.0, ge=0, le=600)
    """Wait for this long without new events before ingesting a burst of changes."""
    api_key: str = ""
    """When set, every ``/api/`` request needs ``Authorization: Bearer KEY`` (env ``CLIPDEX_API_KEY``)."""
    decode_timeout_s: float = Field(10.0, gt=0, le=600)
    """Wall-time budget to decode one uploaded image or make one thumbnail (in a worker process)."""
    decode_workers: int = Field(2, ge=1, le=32)
    """Worker processes that decode uploads and thumbnails."""
    thumb_cache_mb: float = Field(64.0, ge=0, le=4096)
    """Memory for cached thumbnails (keyed by path, size and mtime); 0 turns the cache off."""
    decode_memory_mb: int = Field(1536, ge=0, le=262144)
    """Address-space cap of each decoder worker process, in MiB (0 = none)."""
    query_max_megapixels: float = Field(24.0, gt=0, le=1000)
    """Pixel cap of an uploaded example image as decoded (JPEGs decode reduced first; others are refused above it)."""
    max_uploads: int = Field(4, ge=1, le=256)
    """Requests with a body (uploads) handled at once; more are answered 503 with ``Retry-After``."""
    idle_timeout_s: float = Field(5.0, gt=0, le=3600)
    """A connection with no request under way is closed after this long (also between keep-alive requests)."""
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    """A request's headers must have arrived this long after its first byte (else 408)."""
    body_timeout_s: float = Field(120.0, gt=0, le=86400)
    """A request's body must have arrived this long after its headers (else 408)."""
    send_timeout_s: float = Field(60.0, gt=0, le=86400)
    """A client that accepts no bytes of an answer for this long is disconnected."""


class DuplicatesSettings(_Section):
    """``clipdex duplicates`` and ``/api/duplicates`` (see docs/duplicates.md)."""

    threshold: float = Field(0.9, gt=0, le=1)
    """Cosine of two stored vectors for a candidate pair (generous: the pixel check decides)."""
    min_similarity: float = Field(0.8, gt=0, le=1)
    """Pixel similarity (worst aligned block's SSIM) a candidate pair needs to be grouped."""
    neighbours: int = Field(16, ge=1, le=256)
    """Nearest neighbours asked per file."""
    move_to: str = ""
    """Where the web page's "move" puts duplicates ("" = the page cannot move; relative to the config file)."""


class LoopSettings(_Section):
    """What ``train`` and ``distill`` share: output, checkpoints, schedule, seeds (see docs/training.md)."""

    output: str = "trained-model"
    """The model folder to write (``-o``)."""
    checkpoint_dir: str = ""
    """Periodic resumable checkpoints ("" = a hidden folder beside ``output``)."""
    image_mean: list[ChannelMean] = [0.48145466, 0.4578275, 0.40821073]
    """Per-channel mean the pixels are normalised with (saved in the model's ``preprocess_cfg``)."""
    image_std: list[ChannelStd] = [0.26862954, 0.26130258, 0.27577711]
    """Per-channel standard deviation the pixels are normalised with."""
    epochs: float = Field(1.0, gt=0, le=1_000_000)
    """Passes over the data (fractions allowed)."""
    max_steps: int = Field(0, ge=0, le=1_000_000_000)
    """Total optimizer steps; 0 = from ``epochs``."""
    batch_size: int = Field(256, ge=2, le=65536)
    """Images per optimizer step."""
    lr: float = Field(1e-3, gt=0, le=10)
    """Peak AdamW learning rate (after warm-up, then cosine decay)."""
    weight_decay: float = Field(0.1, ge=0, le=100)
    """AdamW weight decay (not applied to norms, biases and the temperature)."""
    warmup_steps: int = Field(100, ge=0, le=1_000_000_000)
    """Steps of linear learning-rate warm-up."""
    grad_clip: float = Field(1.0, ge=0, le=1_000_000)
    """Clip the gradient norm to this (0 = no clipping)."""
    seed: int = Field(0, ge=0, le=2**32 - 1)
    """Seed of the batch order, augmentations and caption choice (runs are reproducible)."""
    checkpoint_every: int = Field(500, ge=1, le=1_000_000_000)
    """Write a resumable checkpoint every this many steps."""
    aug_scale_min: float = Field(0.8, gt=0, le=1)
    """Random resized crop: the smallest fraction of the image's area kept."""
    aug_flip: bool = True
    """Random horizontal flips."""
    aug_jitter: float = Field(0.0, ge=0, le=1)
    """Random brightness/contrast jitter (0 = none)."""
    threads: int = Field(0, ge=0, le=4096)
    """CPU threads for torch (0 = all cores)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when available (fp16 autocast), else the CPU; or cpu, cuda."""


class TrainSettings(LoopSettings):
    """``clipdex train``: data, architecture, optimisation and augmentation (see docs/training.md)."""

    source: Literal["fashion-mnist", "captions", "coco", "images"] = "fashion-mnist"
    """fashion-mnist (IDX files), captions (folder: sidecar .txt / captions.csv / .jsonl), coco
    (captions JSON), images (image-only folder: image-to-image contrastive learning)."""
    data: str = ""
    """Folder or file of the source ("" = /usr/share/datasets/fashion-mnist for fashion-mnist)."""
    coco_images: str = ""
    """Image folder of a COCO captions JSON ("" = the JSON's folder)."""
    objective: Literal["auto", "clip", "simclr"] = "auto"
    """clip (image-text InfoNCE) or simclr (two augmented views, image tower); auto picks by source."""
    arch: str = ""
    """Open_clip architecture name or local-dir:PATH to start from ("" = use ``model_cfg``)."""
    pretrained: str = ""
    """Pretrained tag or checkpoint file for ``arch`` (fine-tuning)."""
    model_cfg: dict[str, Any] = {}
    """A custom open_clip ``model_cfg`` (used when ``arch`` is "")."""
    init_temperature: float = Field(0.07, gt=0, le=1)
    """The clip objective's starting temperature (learnt; the logit scale is capped at 100)."""
    freeze_image: bool = False
    """Keep the image tower fixed (LiT-style)."""
    freeze_text: bool = False
    """Keep the text tower fixed."""
    templates: list[str] = []
    """Caption templates for Fashion-MNIST's class names, e.g. "a photo of a {}." ([] = the built-in ones)."""
    caption_choice: Literal["per_batch", "per_image"] = "per_batch"
    """per_batch: one caption slot for the whole batch; per_image: a random caption per image."""
    ssl_temperature: float = Field(0.2, gt=0, le=1)
    """The simclr objective's fixed temperature."""
    ssl_scale_min: float = Field(0.3, gt=0, le=1)
    """simclr: the smallest crop area of each augmented view."""
    ssl_jitter: float = Field(0.4, ge=0, le=1)
    """simclr: brightness/contrast jitter of each augmented view."""


class DistillSettings(LoopSettings):
    """``clipdex distill``: a student image tower learns a teacher's image vectors (docs/training.md)."""

    teacher: str = ""
    """The teacher: an open_clip architecture (with ``teacher_pretrained``) or local-dir:PATH."""
    teacher_pretrained: str = ""
    """Pretrained tag or checkpoint file for ``teacher``."""
    student: str = ""
    """The student's architecture: open_clip name or local-dir:PATH ("" = use ``student_cfg``)."""
    student_pretrained: str = ""
    """Pretrained tag or checkpoint file whose image tower the student starts from."""
    student_cfg: dict[str, Any] = {}
    """A custom open_clip ``model_cfg`` for the student (used when ``student`` is "")."""
    project: bool = False
    """Let a student whose output size differs from the teacher's learn a projection to it."""
    source: Literal["images", "fashion-mnist"] = "images"
    """images (image folders) or fashion-mnist (its IDX files)."""
    data: list[str] = []
    """Image folders (source images) or the Fashion-MNIST IDX folder ("" = the Debian package's)."""
    from_collection: str = ""
    """Take the teacher's vectors from this clipdex collection (of the teacher) instead of a teacher pass."""

    _from_collection = field_validator("from_collection")(classmethod(lambda cls, v: v and check_collection(v)))
    image_mean: list[ChannelMean] = []
    """Student normalisation ([] = the teacher's)."""
    image_std: list[ChannelStd] = []
    """Student normalisation ([] = the teacher's)."""
    views: int = Field(4, ge=1, le=64)
    """Views per image whose teacher vectors are cached: the image itself plus ``views - 1`` augmented crops."""
    feature_loss: Literal["cosine", "mse"] = "cosine"
    """cosine: 1 - cosine to the teacher's vector; mse: squared distance."""
    feature_weight: float = Field(1.0, ge=0, le=1000)
    """Weight of the feature term."""
    contrastive_weight: float = Field(0.0, ge=0, le=1000)
    """Weight of the InfoNCE term between student and teacher vectors of a batch. Off by default: on
    Fashion-MNIST it cost the distilled student on every metric (docs/benchmarks.md, "Distillation")."""
    temperature: float = Field(0.05, gt=0, le=1)
    """Of the InfoNCE term between student and teacher vectors of a batch."""


class Settings(_Section):
    """Everything configurable in clipdex."""

    model: ModelSettings = ModelSettings()
    store: StoreSettings = StoreSettings()
    ingest: IngestSettings = IngestSettings()
    video: VideoSettings = VideoSettings()
    search: SearchSettings = SearchSettings()
    ocr: OcrSettings = OcrSettings()
    serve: ServeSettings = ServeSettings()
    duplicates: DuplicatesSettings = DuplicatesSettings()
    ray: RaySettings = RaySettings()
    train: TrainSettings = TrainSettings()
    distill: DistillSettings = DistillSettings()
    config_path: str = ""
    """The TOML file these settings came from ("" for built-in defaults)."""

    def with_overrides(self, **sections: dict[str, Any]) -> Settings:
        """A copy with some fields of some sections replaced; values of None are ignored."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section].update({k: v for k, v in values.items() if v is not None})
        return _validate(data, self.config_path or "overrides")

    @property
    def store_path(self) -> Path:
        path = Path(os.path.expanduser(self.store.path))
        try:
            return path.resolve()
        except (OSError, RuntimeError) as exc:  # a link that cannot be followed (/proc/1/root), a loop
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "symlink loop"
            raise ClipdexError(f"cannot use store path {path}: {reason}") from None


def _validate(data: dict[str, Any], source: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ClipdexError(f"{source}: unknown setting '{where}'") from None
        msg = first["msg"].removeprefix("Value error, ")  # a validator's own sentence
        raise ClipdexError(f"{source}: setting '{where}': {msg}") from None


_LOCAL_DIR = "local-dir:"
_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def _relative_to(base: Path, value: str) -> str:
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())


def _resolve_relative(data: dict[str, Any], base: Path) -> None:
    """Paths in a config file are relative to that file, not to the working directory."""
    sections = {name: data.get(name) for name in ("model", "store", "train", "distill", "duplicates")}
    for section, keys in (("store", ("path",)), ("train", ("data", "coco_images", "output", "checkpoint_dir")),
                          ("distill", ("output", "checkpoint_dir")), ("duplicates", ("move_to",))):
        table = sections[section]
        for key in keys:
            if isinstance(table, dict) and isinstance(table.get(key), str) and table[key]:
                table[key] = _relative_to(base, table[key])
    serve = data.get("serve")
    if isinstance(serve, dict) and isinstance(serve.get("watch"), list):
        serve["watch"] = [_relative_to(base, w) if isinstance(w, str) and w else w for w in serve["watch"]]
    distill = sections["distill"]
    if isinstance(distill, dict) and isinstance(distill.get("data"), list):
        distill["data"] = [_relative_to(base, d) if isinstance(d, str) and d else d for d in distill["data"]]
    for section, name_key, tag_key in (("model", "name", "pretrained"), ("train", "arch", "pretrained"),
                                       ("distill", "teacher", "teacher_pretrained"),
                                       ("distill", "student", "student_pretrained")):
        table = sections[section]
        if not isinstance(table, dict):
            continue
        name = table.get(name_key)
        if isinstance(name, str) and name.startswith(_LOCAL_DIR):
            table[name_key] = _LOCAL_DIR + _relative_to(base, name[len(_LOCAL_DIR):])
        pretrained = table.get(tag_key)  # a file path, as opposed to a pretrained tag
        if isinstance(pretrained, str) and ("/" in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES)):
            table[tag_key] = _relative_to(base, pretrained)


MAX_CONFIG_BYTES = 1 << 20
"""A config file larger than this (1 MiB) is refused before it is read."""
MAX_CONFIG_DEPTH = 32
"""Tables and arrays nested deeper than this are refused (the deepest clipdex reads is 4)."""


def _read_toml(file: Path) -> dict[str, Any]:
    """A TOML file's tables: only a regular file, at most :data:`MAX_CONFIG_BYTES`, UTF-8 text.

    Opened without blocking (a FIFO is never waited on) and read with a cap (``/dev/zero`` ends).
    """
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ClipdexError(f"config file not found: {file}") from None
    except PermissionError:
        raise ClipdexError(f"config file is not readable: {file}") from None
    except OSError as exc:
        raise ClipdexError(f"cannot open config file {file}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ClipdexError(f"config path is a directory, not a TOML file: {file}")
        if not stat.S_ISREG(mode):
            raise ClipdexError(f"config file is not a regular file: {file}")
        try:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ClipdexError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ClipdexError(f"config file {file} is larger than {MAX_CONFIG_BYTES // 1024} KiB; is it a config file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClipdexError(f"{file}: not UTF-8 text (byte {exc.start}); a config file is TOML in UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClipdexError(f"{file}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ClipdexError(f"{file}: nested more than {MAX_CONFIG_DEPTH} levels deep; is it a config file?") from None
    if _depth(data) > MAX_CONFIG_DEPTH:
        raise ClipdexError(f"{file}: nested more than {MAX_CONFIG_DEPTH} levels deep; is it a config file?")
    return data


def _depth(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_CONFIG_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read a TOML file into :class:`Settings`; with no path, the built-in defaults.

    Environment: ``CLIPDEX_CONFIG`` (a TOML file), ``CLIPDEX_STORE``, ``CLIPDEX_QDRANT_URL``,
    ``CLIPDEX_QDRANT_API_KEY``, ``CLIPDEX_API_KEY``.
    """
    path = path or os.environ.get("CLIPDEX_CONFIG") or None
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        file = Path(path).expanduser()
        source = str(file)
        data = _read_toml(file)
        if "config_path" in data:
            raise ClipdexError(f"{file}: unknown setting 'config_path'")
        _resolve_relative(data, file.resolve().parent)
        data["config_path"] = str(file.resolve())
    for section, key, env in (("store", "path", "CLIPDEX_STORE"), ("store", "url", "CLIPDEX_QDRANT_URL"),
                              ("store", "api_key", "CLIPDEX_QDRANT_API_KEY"), ("serve", "api_key", "CLIPDEX_API_KEY")):
        if os.environ.get(env):
            data.setdefault(section, {})[key] = os.environ[env]
    return _validate(data, source)
