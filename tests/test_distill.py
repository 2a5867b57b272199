"""`clipdex distill`: a tiny student learns the bundled model's image vectors on the committed samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_config
from learn_fixtures import REPO, SAMPLES, clipdex
from safetensors.torch import load_file

from retrieval.index import Index
from retrieval.model.torch_backend import CONFIG_NAME, WEIGHTS_NAME, TorchEncoder
from retrieval.settings import DistillSettings, ModelSettings, load_settings
from retrieval.training.distill import distill
from retrieval.training.targets import collection_targets, load_teacher, teacher_pass, view_params

TEACHER = REPO / "models" / "fmnist-tiny"  # the bundled model: 128-d vectors, 28 px
STUDENT_CFG = {  # timm's tiny ResNet, as in the bundled model, to 128 dimensions
    "embed_dim": 128,
    "vision_cfg": {"timm_model_name": "test_resnet", "timm_model_pretrained": False, "timm_pool": "avg",
                   "timm_proj": "linear", "image_size": 28},
}


def _cfg(tmp_path: Path, data: list[Path] | None, **kw) -> DistillSettings:
    values = {"teacher": f"local-dir:{TEACHER}", "student_cfg": STUDENT_CFG, "data": [str(d) for d in data or []],
              "output": str(tmp_path / "student"), "batch_size": 16, "max_steps": 4, "warmup_steps": 2,
              "threads": 1, "checkpoint_every": 2, "views": 2, **kw}
    return DistillSettings(**values)


def _toml(path: Path, **distill: object) -> Path:
    cfg = {**STUDENT_CFG, "vision_cfg": STUDENT_CFG["vision_cfg"]}
    embed_dim = distill.pop("embed_dim", cfg["embed_dim"])
    values = {"teacher": f"local-dir:{TEACHER}", "batch_size": 16, "max_steps": 3, "warmup_steps": 1,
              "threads": 1, "views": 2, **distill}
    lines = ["[distill]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    lines += ["[distill.student_cfg]", f"embed_dim = {embed_dim}", "[distill.student_cfg.vision_cfg]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in cfg["vision_cfg"].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def few(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 real Fashion-MNIST PNGs of three classes, in class folders."""
    root = tmp_path_factory.mktemp("few") / "images"
    for name in ("sneaker", "trouser", "bag"):
        (root / name).mkdir(parents=True)
        for f in sorted((SAMPLES / name).glob("*.png"))[:8]:
            shutil.copy(f, root / name / f.name)
    return root


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / WEIGHTS_NAME))


def test_student_loads_offline_with_the_teachers_text_tower(tmp_path: Path, few: Path):
    proc = clipdex("distill", "--config", str(_toml(tmp_path / "d.toml")), "--data", str(few),
                   "-o", str(tmp_path / "student"), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["steps"] == 3 and out["teacher_pass"] is True
    config = json.loads((tmp_path / "student" / CONFIG_NAME).read_text())
    assert config["clipdex"]["objective"] == "distill"
    assert config["clipdex"]["student_of"].startswith(f"local-dir:{TEACHER}")
    assert config["model_cfg"]["vision_cfg"]["timm_model_name"] == "test_resnet"
    student = TorchEncoder.load(ModelSettings(name=f"local-dir:{tmp_path / 'student'}", pretrained="", device="cpu"))
    teacher = TorchEncoder.load(ModelSettings(name=f"local-dir:{TEACHER}", pretrained="", device="cpu"))
    prompts = ["a photo of a sneaker.", "a bag."]
    np.testing.assert_allclose(student.encode_texts(prompts), teacher.encode_texts(prompts), atol=1e-6)
    s, t = _weights(tmp_path / "student"), _weights(TEACHER)
    assert all(torch.equal(s[k], t[k]) for k in t if not k.startswith("visual."))
    assert s["visual.head.proj.weight"].shape == t["visual.head.proj.weight"].shape
    assert not torch.equal(s["visual.head.proj.weight"], t["visual.head.proj.weight"])
    assert student.encode_pil([student_image(few)]).shape == (1, 128)


def student_image(folder: Path):
    from PIL import Image

    return Image.open(next(iter(sorted(folder.rglob("*.png"))))).convert("RGB")


def test_text_search_on_a_student_collection_finds_the_class(tmp_path: Path):
    """After a short distillation from the bundled model, the student's collection answers the
    teacher's text queries: the top hits of a class prompt are images of that class."""
    result = distill(_cfg(tmp_path, [SAMPLES], batch_size=64, max_steps=80, warmup_steps=10, lr=0.003, views=1,
                          checkpoint_every=1000), progress=False)
    assert result.output == tmp_path / "student"
    settings = load_settings(write_config(tmp_path / "c.toml", tmp_path / "student", tmp_path / "store"))
    with Index.open(settings, create=True) as index:
        assert index.ingest([SAMPLES]).indexed == 300
        for name in ("sneaker", "trouser", "bag", "ankle boot", "dress"):
            hits = [Path(h.payload["path"]).parent.name for h in index.search(f"a photo of a {name}.", limit=5)]
            assert hits.count(name.replace(" ", "_")) >= 4, (name, hits)
        ident = index.encoder.identity  # the student names the teacher it was distilled from
        assert index.store.meta().student_of == ident.student_of
    assert ident.student_of.startswith(f"local-dir:{TEACHER}")
    proc = clipdex("status", "--config", str(tmp_path / "c.toml"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["student_of"] == ident.student_of
    assert f"student of  {ident.student_of}" in clipdex("status", "--config", str(tmp_path / "c.toml")).stdout


def test_from_collection_gives_the_teacher_pass_targets(tmp_path: Path, few: Path):
    settings = load_settings(write_config(tmp_path / "c.toml", TEACHER, tmp_path / "store", collection="teach"))
    settings = settings.with_overrides(model={"precision": "fp32"})  # exactly the teacher pass's arithmetic
    with Index.open(settings, create=True) as index:
        index.ingest([few])
    cfg = _cfg(tmp_path, None, from_collection="teach")
    teacher = load_teacher(cfg)
    data, targets, _ = collection_targets(settings, "teach", teacher, lambda _m: None)
    assert len(data) == 24 and targets.shape == (24, 1, 128)
    passed = teacher_pass(teacher, data, view_params(len(data), cfg.model_copy(update={"views": 1})))
    np.testing.assert_allclose(targets.numpy(), passed.numpy(), atol=1e-3)  # the store keeps float16 vectors
    proc = clipdex("distill", "--config", str(_toml(tmp_path / "d.toml")), "--store", str(tmp_path / "store"),
                   "--from-collection", "teach", "-o", str(tmp_path / "student"), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["teacher_pass"] is False and (tmp_path / "student" / WEIGHTS_NAME).is_file()


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, few: Path):
    straight = distill(_cfg(tmp_path, [few], output=str(tmp_path / "straight"), max_steps=5), progress=False)
    assert straight.teacher_pass is True
    split = _cfg(tmp_path, [few], output=str(tmp_path / "split"), max_steps=5)
    stopped = distill(split, stop_after=3, progress=False)
    assert stopped.output is None and stopped.steps == 3 and not (tmp_path / "split").exists()
    resumed = distill(split, resume=True, progress=False)
    assert resumed.steps == 5 and resumed.teacher_pass is False  # the teacher's vectors were cached
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_projection_lets_another_output_size_learn_the_teachers(tmp_path: Path, few: Path):
    config = _toml(tmp_path / "d.toml", embed_dim=64, project=True)
    proc = clipdex("distill", "--config", str(config), "--data", str(few), "-o", str(tmp_path / "s"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    student = TorchEncoder.load(ModelSettings(name=f"local-dir:{tmp_path / 's'}", pretrained="", device="cpu"))
    assert student.dim == 128


@pytest.fixture(scope="module")
def other_store(tmp_path_factory: pytest.TempPathFactory, few: Path, tiny_model_dir: Path) -> Path:
    """A store whose collection 'other' was filled by another model (conftest's tiny random CLIP)."""
    root = tmp_path_factory.mktemp("other")
    settings = load_settings(write_config(root / "o.toml", tiny_model_dir, root / "store", collection="other"))
    with Index.open(settings, create=True) as index:
        index.ingest([few])
    return root / "store"


@pytest.mark.parametrize("args, toml, message", [
    (["--data", "{few}"], {"embed_dim": 64}, "outputs 64-d vectors and the teacher 128-d"),
    (["--data", "{tmp}/empty"], {}, "no images found"),
    (["--data", "{tmp}/nope"], {}, "not found"),
    ([], {}, "needs at least one image folder"),
    (["--data", "{few}", "--from-collection", "other"], {}, "not both"),
    (["--from-collection", "other"], {}, "was built with model"),
    (["--from-collection", "missing"], {}, "empty or missing"),
    (["--data", "{few}"], {"teacher": ""}, "distill.teacher (--teacher) is required"),
    (["--data", "{few}", "--teacher", "{tmp}/empty"], {}, "has no open_clip_config.json"),
    (["--data", "{few}", "--student", "ViT-Nope-1"], {}, "unknown open_clip architecture"),
    (["--data", "{few}", "--resume"], {}, "no checkpoint"),
    (["--data", "{few}", "-o", "{tmp}/photos"], {}, "not a clipdex model folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, few: Path, other_store: Path,
                                                  args: list[str], toml: dict, message: str):
    (tmp_path / "empty").mkdir()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "mine.jpg").write_bytes(b"keep")
    config = _toml(tmp_path / "d.toml", **toml)
    argv = [a.format(tmp=tmp_path, few=few) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "out")]
    proc = clipdex("distill", "--config", str(config), "--store", str(other_store), "--quiet", *argv)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("clipdex: error:") and message in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and (tmp_path / "photos" / "mine.jpg").read_bytes() == b"keep"


def test_shipped_vit_ti_recipe_distils_from_vit_b_32(tmp_path: Path, few: Path):
    """configs/distill-vit-ti.toml (the benchmark's fastest student) runs as shipped, here from a
    randomly initialised ViT-B-32 teacher for one step: its 512-d student lands in the teacher's
    space and keeps ViT-B-32's text tower."""
    out = tmp_path / "vit-ti"
    proc = clipdex("distill", "--config", str(REPO / "configs" / "distill-vit-ti.toml"), "--teacher-pretrained", "",
                   "--data", str(few / "bag"), "--steps", "1", "--batch-size", "8", "--views", "1",
                   "--threads", "1", "-o", str(out), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["model_cfg"]["vision_cfg"]["width"] == 192 and config["model_cfg"]["embed_dim"] == 512
    assert config["clipdex"]["student_of"].startswith("ViT-B-32")
    student = TorchEncoder.load(ModelSettings(name=f"local-dir:{out}", pretrained="", device="cpu", precision="fp32"))
    assert student.identity.student_of == config["clipdex"]["student_of"]
    assert student.encode_pil([student_image(few)]).shape == (1, 512)
    assert sum(p.numel() for p in student.model.visual.parameters()) < 7_000_000  # ViT-B-32: 88 M
