from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mirage_git import config
from mirage_git.config import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mirage.toml"
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path):
    cfg = config.load(write(tmp_path, '[apps.hello]\nrepo = "src/hello"\nwebhook_secret = "s"\n'))
    app = cfg.apps["hello"]
    assert cfg.domain == "dev.localhost" and app.domain == "dev.localhost"
    assert str(cfg.web.listen) == "127.0.0.1:8080" and str(cfg.proxy.listen) == "127.0.0.1:8000"
    assert cfg.worker.count == 2 and cfg.redis_url is None and cfg.embedded_redis
    assert cfg.data_dir == tmp_path / ".mirage"
    assert app.repo == str(tmp_path / "src" / "hello")
    assert (app.port, app.health_path, app.health_timeout, app.dockerfile, app.context) == (None, "/", 60.0,
                                                                                          "Dockerfile", ".")
    assert cfg.env_url("main.dev.localhost") == "http://main.dev.localhost:8000/"
    assert str(tmp_path / "src" / "hello") in app.repo_ids


def test_full_config(tmp_path):
    cfg = config.load(write(tmp_path, """
domain = "Preview.Example.com"
redis_url = "redis://127.0.0.1:6379/1"
data_dir = "/var/lib/mirage"
[web]
listen = "127.0.0.1:9090"
[proxy]
listen = "127.0.0.1:80"
workers = 2
[[proxy.ports]]
listen = "127.0.0.1:8001"
target = 9000
[worker]
count = 4
[apps.web]
repo = "git@github.com:acme/web.git"
webhook_repo = "acme/web"
webhook_secret = "shh"
port = 3000
health_path = "/healthz"
health_timeout = 5
env = { NODE_ENV = "development", DEBUG = true, WORKERS = 3 }
dockerfile = "docker/Dockerfile.dev"
context = "app"
[apps.web.parameters.LOG_LEVEL]
options = ["debug", "info"]
default = "info"
[apps.api]
repo = "https://github.com/acme/api"
domain = "api.preview.example.com"
"""))
    web, api = cfg.apps["web"], cfg.apps["api"]
    assert cfg.domain == "preview.example.com" and api.domain == "api.preview.example.com"
    assert cfg.env_url("x.preview.example.com") == "http://x.preview.example.com/"
    assert dict(web.env) == {"NODE_ENV": "development", "DEBUG": "true", "WORKERS": "3"}
    assert web.repo == "git@github.com:acme/web.git" and "acme/web" in web.repo_ids
    assert cfg.proxy.ports[0].target == 9000 and cfg.proxy.workers == 2
    assert web.parameters["LOG_LEVEL"].env == "LOG_LEVEL" and web.parameters["LOG_LEVEL"].default == "info"
    assert cfg.data_dir == Path("/var/lib/mirage")


@pytest.mark.parametrize("text,key,problem", [
    ("domain = 5\n[apps.a]\n", "domain", "must be a string"),
    ("[apps.a]\nport = 70000\n", "apps.a.port", "between 1 and 65535"),
    ("[apps.a]\nport = \"80\"\n", "apps.a.port", "must be an integer"),
    ("[apps.a]\nport = true\n", "apps.a.port", "must be an integer"),
    ("[apps.a]\nhealth_path = \"health\"\n", "apps.a.health_path", "must start with '/'"),
    ("[apps.a]\nprot = 80\n", "apps.a.prot", "unknown key"),
    ("[apps.A_B]\n", "apps.A_B", "lower-case"),
    ("[apps.a]\n[apps.b]\n", "apps.b.domain", "already used by app 'a'"),
    ("", "apps", "no apps configured"),
    ("[apps.a]\ncontext = \"../outside\"\n", "apps.a.context", "inside the repository"),
    ("[apps.a]\ndockerfile = \"/etc/passwd\"\n", "apps.a.dockerfile", "inside the repository"),
    ("[apps.a]\nenv = { \"BAD-NAME\" = \"x\" }\n", "apps.a.env.BAD-NAME", "environment variable"),
    ("[apps.a]\nwebhook_secret = \"  \"\n", "apps.a.webhook_secret", "is empty"),
    ("redis_url = \"localhost:6379\"\n[apps.a]\n", "redis_url", "redis://"),
    ("[web]\nlisten = \"8080\"\n[apps.a]\n", "web.listen", "host:port"),
    ("domain = \"bad_domain\"\n[apps.a]\n", "domain", "not a valid DNS domain"),
    ("[apps.a]\n[apps.a.parameters.X]\nrule = \"(\"\n", "apps.a.parameters.X.rule", "regular expression"),
    ("[apps.a]\n[apps.a.parameters.X]\noptions = [\"a\"]\ndefault = \"b\"\n", "apps.a.parameters.X.default",
     "one of a"),
    ("[[proxy.ports]]\nlisten = \"127.0.0.1:8000\"\ntarget = 1\n[apps.a]\n", "proxy.ports", "share a port"),
    ("[[proxy.ports]]\nlisten = \"127.0.0.1:8001\"\n[apps.a]\n", "proxy.ports[0].target", "is required"),
    ("this is not toml", "(syntax)", "not valid TOML"),
])
def test_errors_name_file_key_and_problem(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == key
    assert problem in err.value.problem
    assert str(err.value).startswith(f"{path}: {key}: ")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load(tmp_path / "nope.toml")
    assert "cannot read" in str(err.value)


def test_cli_prints_one_line_and_exits_2(tmp_path):
    path = write(tmp_path, "[apps.a]\nport = 0\n")
    out = subprocess.run([sys.executable, "-m", "mirage_git", "--config", str(path), "envs"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"mirage-git: {path}: apps.a.port: must be between 1 and 65535"]
    assert out.stdout == ""


@pytest.mark.parametrize("text,key,problem", [
    ("[web]\nlisten = \"127.0.0.1:²\"\n[apps.a]\n", "web.listen", "host:port"),
    ("[[proxy.ports]]\nlisten = \"127.0.0.1:١٢\"\ntarget = 1\n[apps.a]\n", "proxy.ports[0].listen", "host:port"),
    ("[apps.a]\nhealth_timeout = nan\n", "apps.a.health_timeout", "finite"),
    ("[apps.a]\nhealth_timeout = inf\n", "apps.a.health_timeout", "finite"),
    ("[proxy]\nidle_timeout = inf\n[apps.a]\n", "proxy.idle_timeout", "finite"),
    ("[proxy]\nconnect_timeout = nan\n[apps.a]\n", "proxy.connect_timeout", "finite"),
    ("[web]\nstream_max = nan\n[apps.a]\n", "web.stream_max", "finite"),
    ("[apps.\"a\\n\"]\n", "apps.a\n", "lower-case"),
    ("domain = \"dev.localhost\\n\"\n[apps.a]\n", "domain", "not a valid DNS domain"),
    ("[apps.a]\ndomain = \"a.localhost\\n\"\n", "apps.a.domain", "not a valid DNS domain"),
    ("[apps.a]\nenv = { \"A\\n\" = \"x\" }\n", "apps.a.env.A\n", "environment variable"),
    ("[apps.a]\n[apps.a.parameters.X]\nenv = \"X\\n\"\n", "apps.a.parameters.X.env", "environment variable"),
    ("[apps.a]\nhealth_path = \"/health check\"\n", "apps.a.health_path", "spaces"),
    ("[apps.a]\nhealth_path = \"/\\r\\nX: y\"\n", "apps.a.health_path", "spaces"),
    ("[apps.a]\nhealth_path = \"/é\"\n", "apps.a.health_path", "spaces"),
    ("[apps.a]\nrepo = \"https://[::1/x.git\"\n", "apps.a.repo", "not a valid URL"),
    ("[apps.a]\nrepo = \"https://github.com:abc/o/n.git\"\n", "apps.a.repo", "not a valid URL"),
    ("[apps.a]\ndockerfile = \"\"\n", "apps.a.dockerfile", "must name a file"),
    ("[apps.a]\ndockerfile = \".\"\n", "apps.a.dockerfile", "must name a file"),
])
def test_hostile_values_are_config_errors(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == key
    assert problem in err.value.problem
    assert "\n" not in str(err.value), "the message must stay one line"


@pytest.mark.parametrize("text", [
    "[web]\nlisten = \"127.0.0.1:²\"\n[apps.a]\n",
    "[apps.a]\n[apps.a.parameters.X]\nrule = \"a\\nb\"\ndefault = \"c\"\n",
    "[apps.\"a\\nb\"]\n",
])
def test_cli_prints_hostile_config_errors_on_one_line(tmp_path, text):
    path = write(tmp_path, text)
    out = subprocess.run([sys.executable, "-m", "mirage_git", "--config", str(path), "envs"],
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith(f"mirage-git: {path}: "), out.stderr


@pytest.mark.parametrize("rule", ["x{99999999999}", "(" * 600 + ")" * 600])
def test_a_rule_python_cannot_compile_is_a_config_error(tmp_path, rule):
    path = write(tmp_path, f'[apps.a]\n[apps.a.parameters.X]\nrule = "{rule}"\n')
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == "apps.a.parameters.X.rule" and "regular expression" in err.value.problem
