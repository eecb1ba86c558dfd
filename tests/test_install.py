"""Installing the plugin keeps the user's fairseq; an unsupported fairseq is named at import."""

import json
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from admin_fairseq import UnsupportedFairseq, check_fairseq_version

from conftest import REPO


def test_supported_fairseq_versions_and_the_error_for_others():
    for version in ("0.12.2", "0.12.3", "0.12.3.1"):
        check_fairseq_version(version)
    for version in ("0.10.2", "0.13.0", "1.0.0a0", "unknown"):
        with pytest.raises(UnsupportedFairseq, match=rf"needs fairseq 0.12.x .*found fairseq {version} "):
            check_fairseq_version(version)


_LIST = """
import importlib.metadata as md, json
print(json.dumps(sorted((d.metadata["Name"].lower(), d.version, str(d._path.parent))
                        for d in md.distributions())))
"""


@pytest.mark.slow
def test_pip_install_into_an_environment_with_fairseq_keeps_it(tmp_path):
    """A user's environment that already has fairseq-fixed (this project's environment,
    seen through a .pth file, stands in for it): `pip install -e .` adds admin-fairseq and
    replaces or adds nothing else, and the package's requirements name no fairseq."""
    env = tmp_path / "user-env"
    # no pip or setuptools of its own: those of the environment it sees (pip runs from there)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=300)
    python = env / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (tmp_path / "user-env" / site.split(str(env) + "/", 1)[1] / "users-packages.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )  # fmt: skip
    before = json.loads(subprocess.run([python, "-c", _LIST], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    fairseq_before = [d for d in before if d[0] == "fairseq-fixed"]
    assert len(fairseq_before) == 1  # the user's fairseq

    result = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation",
                             "--no-cache-dir", "-e", str(REPO)],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = json.loads(subprocess.run([python, "-c", _LIST], capture_output=True, text=True,
                                      check=True).stdout)  # fmt: skip
    added = [d for d in after if d not in before]
    assert [d[0] for d in added] == ["admin-fairseq"] and added[0][2].startswith(str(env)), added
    assert [d for d in after if d[0] == "fairseq-fixed"] == fairseq_before  # same version, same place
    assert all(d in after for d in before)  # nothing removed or replaced

    requires = subprocess.run([python, "-c", "import importlib.metadata as md; "
                               "print('\\n'.join(md.requires('admin-fairseq')))"],
                              capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    plain = [r for r in requires if "extra ==" not in r]
    assert not any(r.lower().startswith("fairseq") for r in plain), plain
    assert any(r.startswith("fairseq-fixed") and 'extra == "fairseq"' in r for r in requires), requires
    imported = subprocess.run([python, "-c", "from admin_fairseq import plugin; import fairseq; "
                               "print(plugin.load() is fairseq, fairseq.__file__)"],
                              capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.startswith("True ") and fairseq_before[0][2] in imported.stdout


def test_cluster_tests_skip_on_a_users_machine_and_fail_in_ci(monkeypatch):
    """Without a cluster tool the cluster tests skip, naming it and the install command; with
    CI=true they fail instead (.ci/run installs the tools, so CI never skips them)."""
    from conftest import CLUSTER_TOOLS_INSTALL, require_cluster_tools

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"needs no-such-daemon-xyz.*" + re.escape(CLUSTER_TOOLS_INSTALL)):
        require_cluster_tools("the test", ["no-such-daemon-xyz"], root=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"needs no-such-daemon-xyz.*CI=true"):
        require_cluster_tools("the test", ["no-such-daemon-xyz"], root=False)
    require_cluster_tools("the test", ["sh"], root=False)  # present: nothing happens


def test_citation_file_names_this_version():
    import yaml

    import admin_fairseq

    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["version"] == admin_fairseq.__version__
    assert citation["preferred-citation"]["year"] == 2020 and citation["license"] == "MIT"
    assert f"## {admin_fairseq.__version__}" in (REPO / "CHANGELOG.md").read_text()


@pytest.mark.slow
def test_a_non_editable_install_prints_its_user_dir_and_fairseq_loads_it(tmp_path):
    """After `pip install .` (no -e) the plugin is a folder in site-packages: `python -m
    admin_fairseq --user-dir` prints that folder, and fairseq's own --user-dir import of it
    registers the model."""
    env = tmp_path / "user-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=300)
    python = env / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (env / site.split(str(env) + "/", 1)[1] / "users-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    build = tmp_path / "src"  # a copy: building in place would leave build/ in the repository
    shutil.copytree(REPO / "admin_fairseq", build / "admin_fairseq", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, build / name)
    result = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps",
                             "--no-cache-dir", str(build)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = subprocess.run([python, "-m", "admin_fairseq", "--user-dir"], capture_output=True, text=True,
                             cwd=tmp_path, check=True).stdout.strip()  # fmt: skip
    assert printed == f"{site}/admin_fairseq", printed
    loaded = subprocess.run([python, "-c", "import argparse; from fairseq import utils; "
                             f"utils.import_user_module(argparse.Namespace(user_dir={printed!r})); "
                             "from fairseq.models import ARCH_MODEL_REGISTRY as r; "
                             "print('transformer_admin_tiny' in r, r['transformer_admin_tiny'].__module__)"],
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.startswith("True "), loaded.stdout
