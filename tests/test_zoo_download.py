"""Model zoo downloads over real HTTP from a loopback server: resume, checksums, pickle refusal, and the
Hugging Face source driven through huggingface_hub against a minimal Hub-compatible endpoint."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from safetensors.torch import load_file, save_file

from model_zoo import (
    ChecksumMismatchError,
    PickleCheckpointError,
    RegistryError,
    download,
    http_download,
    resolve_model,
    verify,
)
from model_zoo.convert import ConversionError, convert_pickle_file
from model_zoo.hf_source import OfflineMissingError
from model_zoo.http_download import DownloadError, download_file
from model_zoo.registry import Registry

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class ZooServer(ThreadingHTTPServer):
    """Serves ``files`` (URL path -> bytes) with Range support, plus a minimal Hugging Face Hub API for
    ``repos`` (repo_id -> {filename: bytes}) at commit ``COMMIT``. ``cut[path] = n`` makes the next GET
    of ``path`` stop after n body bytes (the connection is closed mid-transfer)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.repos: dict[str, dict[str, bytes]] = {}
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.log: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def gets(self, path: str) -> list[dict]:
        return [r for r in self.log if r["method"] == "GET" and r["path"] == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ZooServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _record(self, **kw) -> dict:
        rec = {
            "method": self.command,
            "path": urlsplit(self.path).path,
            "range": self.headers.get("Range"),
            **kw,
        }
        with self.server.lock:
            self.server.log.append(rec)
        return rec

    def _json(self, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def _not_found(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.send_header("X-Error-Code", "EntryNotFound")
        self.end_headers()

    def _lookup(self, path: str) -> tuple[bytes | None, dict[str, str]]:
        """Body and extra headers for a file path (plain file or HF resolve URL)."""
        if path in self.server.files:
            return self.server.files[path], {}
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, fname = "/".join(parts[:2]), parts[3], unquote("/".join(parts[4:]))
            repo = self.server.repos.get(repo_id)
            if repo is None or rev not in (COMMIT, "main") or fname not in repo:
                return None, {"X-Repo-Commit": COMMIT}
            body = repo[fname]
            return body, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
        return None, {}

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("tree", "revision"):
            self._record()
            repo = self.server.repos.get("/".join(parts[2:4]))
            if repo is None:
                return self._not_found()
            files = [
                {"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for n, b in sorted(repo.items())
            ]
            if parts[4] == "revision":
                return self._json(
                    {
                        "id": "/".join(parts[2:4]),
                        "sha": COMMIT,
                        "siblings": [{"rfilename": f["path"]} for f in files],
                    }
                )
            return self._json(files)
        body, extra = self._lookup(path)
        if body is None:
            self._record(status=404)
            return self._not_found()
        start = 0
        rng = self.headers.get("Range")
        if rng and not self.server.ignore_range and self.command == "GET":
            start = int(rng.split("=")[1].split("-")[0])
        if start >= len(body) and start > 0:
            self._record(status=416, sent=0)
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = body[start:]
        status = 206 if start else 200
        cut = self.server.cut.pop(path, None) if self.command == "GET" else None
        sent = 0 if self.command == "HEAD" else len(payload) if cut is None else cut
        self._record(status=status, sent=sent, start=start)  # before replying: the client may be faster
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.command == "HEAD":
            return
        self.wfile.write(payload[:sent])
        if cut is not None:  # drop the connection mid-body
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def server():
    srv = ZooServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def zoo_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(http_download.time, "sleep", lambda s: None)


def _safetensors_bytes(tmp_path: Path, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    p = tmp_path / f"w{seed}.safetensors"
    save_file(
        {"proj.weight": torch.randn(64, 48, generator=g), "proj.bias": torch.randn(64, generator=g)}, str(p)
    )
    return p.read_bytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _url_registry(
    server: ZooServer,
    files: dict[str, bytes],
    *,
    name: str = "toy-ckpt",
    declared: dict[str, bytes] | None = None,
) -> Registry:
    """Serve ``files`` under /m/ and register them (with the sha256 of ``declared`` if given)."""
    declared = declared or files
    for n, b in files.items():
        server.files[f"/m/{n}"] = b
    return Registry.from_mapping(
        {
            "version": 1,
            "models": [
                {
                    "name": name,
                    "kind": "checkpoint",
                    "preset": "tiny",
                    "stage": "stage3",
                    "source": {"kind": "url", "url": server.url + "/m/"},
                    "files": [{"path": n, "sha256": _sha(b), "size": len(b)} for n, b in declared.items()],
                }
            ],
        },
        origin="test-registry.yaml",
    )


def test_download_then_verify_and_resolve_from_disk(server, tmp_path):
    weights, config = _safetensors_bytes(tmp_path), b'{"model_type": "tinygg"}'
    reg = _url_registry(server, {"model.safetensors": weights, "config.json": config})
    out = download("toy-ckpt", registry=reg, progress=False)
    assert (out / "model.safetensors").read_bytes() == weights
    assert (out / "config.json").read_bytes() == config
    assert load_file(str(out / "model.safetensors"))["proj.weight"].shape == (64, 48)
    report = verify("toy-ckpt", registry=reg)
    assert report.ok and {c.status for c in report.checks} == {"ok"}
    n_requests = len(server.log)
    assert resolve_model("toy-ckpt", registry=reg) == out  # verified files are not fetched again
    assert resolve_model("toy-ckpt", download=False, registry=reg) == out
    assert len(server.log) == n_requests
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]  # no stamps, locks


def test_interrupted_transfer_resumes_with_range_within_one_call(server, tmp_path):
    weights = _safetensors_bytes(tmp_path, seed=1)
    half = len(weights) // 2
    reg = _url_registry(server, {"model.safetensors": weights})
    server.cut["/m/model.safetensors"] = half
    out = download("toy-ckpt", registry=reg, progress=False)
    assert (out / "model.safetensors").read_bytes() == weights
    gets = server.gets("/m/model.safetensors")
    assert len(gets) == 2
    assert gets[0]["range"] is None and gets[0]["sent"] == half
    assert gets[1]["range"] == f"bytes={half}-"
    assert gets[1]["status"] == 206 and gets[1]["start"] == half
    assert gets[1]["sent"] == len(weights) - half  # the first half was not sent again


def test_interrupted_transfer_keeps_part_and_next_call_resumes(server, tmp_path):
    weights = _safetensors_bytes(tmp_path, seed=2)
    cut = len(weights) // 3
    server.files["/w.safetensors"] = weights
    server.cut["/w.safetensors"] = cut
    dest = tmp_path / "dl" / "w.safetensors"
    with pytest.raises(DownloadError, match="resume"):
        download_file(server.url + "/w.safetensors", dest, sha256=_sha(weights), retries=0, progress=False)
    part = dest.with_name("w.safetensors.part")
    assert part.stat().st_size == cut and not dest.exists()
    download_file(server.url + "/w.safetensors", dest, sha256=_sha(weights), retries=0, progress=False)
    assert dest.read_bytes() == weights and not part.exists()
    second = server.gets("/w.safetensors")[1]
    assert second["range"] == f"bytes={cut}-" and second["sent"] == len(weights) - cut


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    weights = _safetensors_bytes(tmp_path, seed=3)
    server.files["/w.safetensors"] = weights
    server.ignore_range = True
    dest = tmp_path / "w.safetensors"
    dest.with_name("w.safetensors.part").write_bytes(b"garbage-prefix")
    download_file(server.url + "/w.safetensors", dest, sha256=_sha(weights), progress=False)
    assert dest.read_bytes() == weights


def test_checksum_mismatch_is_refused_and_file_removed(server, tmp_path):
    good, evil = _safetensors_bytes(tmp_path, seed=4), _safetensors_bytes(tmp_path, seed=5)
    reg = _url_registry(server, {"model.safetensors": evil}, declared={"model.safetensors": good})
    with pytest.raises(ChecksumMismatchError, match=_sha(good)) as info:
        download("toy-ckpt", registry=reg, progress=False)
    assert _sha(evil) in str(info.value) and "removed" in str(info.value)
    store = tmp_path / "home" / "models" / "toy-ckpt"
    assert not (store / "model.safetensors").exists()
    assert not (store / "model.safetensors.part").exists()


def test_tampered_file_fails_verify_and_is_fetched_again(server, tmp_path):
    weights = _safetensors_bytes(tmp_path, seed=6)
    reg = _url_registry(server, {"model.safetensors": weights})
    out = download("toy-ckpt", registry=reg, progress=False)
    data = bytearray(weights)
    data[-1] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(data))
    report = verify("toy-ckpt", registry=reg)
    assert not report.ok and report.problems()[0].status == "mismatch"
    with pytest.raises(ChecksumMismatchError):
        resolve_model("toy-ckpt", download=False, registry=reg)
    assert download("toy-ckpt", registry=reg, progress=False) == out  # fetched again
    assert (out / "model.safetensors").read_bytes() == weights


def test_pickle_checkpoint_directory_is_refused_with_conversion_advice(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"w": torch.ones(2)}, ckpt / "pytorch_model.bin")
    (ckpt / "config.json").write_text("{}")
    with pytest.raises(PickleCheckpointError, match="safetensors") as info:
        resolve_model(str(ckpt))
    assert "tinygg zoo convert" in str(info.value) and "pytorch_model.bin" in str(info.value)
    assert not verify(str(ckpt), registry=Registry()).ok
    # after conversion the directory resolves (the pickle stays, but only safetensors are loaded)
    target = convert_pickle_file(ckpt / "pytorch_model.bin")
    assert target.name == "model.safetensors"
    assert torch.equal(load_file(str(target))["w"], torch.ones(2))
    assert resolve_model(str(ckpt)) == ckpt


def test_convert_command_writes_safetensors(tmp_path, capsys):
    from model_zoo.cli import main

    emb = torch.randn(6, 4)  # tied and strided views share storage, which safetensors refuses as is
    torch.save(
        {"emb": emb, "lm_head": emb, "tail": emb[3:], "t": emb.t(), "b": torch.zeros(2)},
        tmp_path / "weights.pth",
    )
    assert main(["zoo", "convert", str(tmp_path)]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert sorted(tensors) == ["b", "emb", "lm_head", "t", "tail"]
    for key, want in {"emb": emb, "lm_head": emb, "tail": emb[3:], "t": emb.t(), "b": torch.zeros(2)}.items():
        assert torch.equal(tensors[key], want), key
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["zoo", "convert", str(empty)]) == 2
    assert "no pickle weight files" in capsys.readouterr().err


def test_pickle_file_in_registry_is_refused():
    with pytest.raises(RegistryError, match=r"entry 'bad'.*files\[0\]\.path.*pickle"):
        Registry.from_mapping(
            {
                "version": 1,
                "models": [
                    {
                        "name": "bad",
                        "kind": "component",
                        "source": {"kind": "url", "url": "http://x/"},
                        "files": [{"path": "pytorch_model.bin", "sha256": "a" * 64}],
                    }
                ],
            },
            origin="r.yaml",
        )


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_not_executed_by_conversion(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": _Evil(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(ConversionError, match="weights-only"):
        convert_pickle_file(tmp_path / "evil.pt")
    assert not marker.exists()
    assert not (tmp_path / "model.safetensors").exists()


# ---- Hugging Face source, through huggingface_hub against the loopback server ----


@pytest.fixture
def hub(server, monkeypatch):
    """Turn Hugging Face access on, pointed at the loopback server."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return server


def _go_offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _hf_registry(files: list[dict] | None = None, **extra) -> Registry:
    entry = {
        "name": "acme/tiny-llm",
        "kind": "component",
        "source": {"kind": "hf", "repo_id": "acme/tiny-llm", "revision": COMMIT},
        **extra,
    }
    if files is not None:
        entry["files"] = files
    return Registry.from_mapping({"version": 1, "models": [entry]}, origin="hf-registry.yaml")


def test_hf_source_downloads_pinned_revision_then_serves_offline(hub, tmp_path, monkeypatch):
    weights = _safetensors_bytes(tmp_path, seed=7)
    hub.repos["acme/tiny-llm"] = {
        "model.safetensors": weights,
        "config.json": b'{"a": 1}',
        "tokenizer.json": b"{}",
        "pytorch_model.bin": b"pickle weights that must not be fetched",
        "README.md": b"# hi",
    }
    reg = _hf_registry([{"path": "model.safetensors", "sha256": _sha(weights)}])
    path = resolve_model("acme/tiny-llm", registry=reg)
    assert path.name == COMMIT and "models--acme--tiny-llm" in str(path)
    assert (path / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    fetched = {r["path"].rsplit("/", 1)[-1] for r in hub.log if "/resolve/" in r["path"]}
    assert fetched == {"model.safetensors", "config.json", "tokenizer.json"}
    assert all(f"/resolve/{COMMIT}/" in r["path"] for r in hub.log if "/resolve/" in r["path"])
    # offline: served from the cache without a request
    _go_offline(monkeypatch)
    n = len(hub.log)
    assert resolve_model("acme/tiny-llm", registry=reg) == path
    assert resolve_model("acme/tiny-llm", download=False, registry=reg) == path
    assert len(hub.log) == n
    assert verify("acme/tiny-llm", registry=reg).ok
    assert not [p for p in path.iterdir() if p.name.startswith(".")]  # the HF cache is huggingface_hub's
    assert list((tmp_path / "home" / "stamps").glob(f"{COMMIT}-*.json"))  # verification stamps go here
    # --dir: a private copy of the snapshot
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    mine = download("acme/tiny-llm", tmp_path / "mine", registry=reg)
    assert mine == tmp_path / "mine" and (mine / "model.safetensors").read_bytes() == weights
    assert not (mine / "pytorch_model.bin").exists()
    assert verify(str(mine), registry=reg).ok


def test_hf_offline_names_what_is_missing(hub, monkeypatch):
    _go_offline(monkeypatch)
    reg = _hf_registry([{"path": "model.safetensors", "sha256": "b" * 64}])
    with pytest.raises(OfflineMissingError, match=r"HF_HUB_OFFLINE.*acme/tiny-llm@0123.*model\.safetensors"):
        resolve_model("acme/tiny-llm", registry=reg)
    assert hub.log == []


def test_hf_checksum_mismatch_removes_the_cached_file(hub, tmp_path):
    weights = _safetensors_bytes(tmp_path, seed=8)
    hub.repos["acme/tiny-llm"] = {"model.safetensors": weights, "config.json": b"{}"}
    reg = _hf_registry([{"path": "model.safetensors", "sha256": "c" * 64}])
    with pytest.raises(ChecksumMismatchError, match="removed"):
        download("acme/tiny-llm", registry=reg)
    snap = tmp_path / "hf" / "models--acme--tiny-llm" / "snapshots" / COMMIT
    assert not (snap / "model.safetensors").exists()
    blobs = tmp_path / "hf" / "models--acme--tiny-llm" / "blobs"
    assert _sha(weights) not in {p.name for p in blobs.iterdir()}


def test_hf_pickle_weights_are_converted_when_the_entry_says_so(hub, tmp_path):
    buf = tmp_path / "pm.bin"
    torch.save({"vision.w": torch.arange(6.0).reshape(2, 3)}, buf)
    hub.repos["acme/tiny-llm"] = {"pytorch_model.bin": buf.read_bytes(), "config.json": b'{"x": 2}'}
    reg = Registry.from_mapping(
        {
            "version": 1,
            "models": [
                {
                    "name": "acme/tiny-llm",
                    "kind": "component",
                    "convert_pickle": ["pytorch_model.bin"],
                    "source": {
                        "kind": "hf",
                        "repo_id": "acme/tiny-llm",
                        "revision": COMMIT,
                        "allow_patterns": ["*.json", "pytorch_model.bin"],
                    },
                }
            ],
        },
        origin="hf.yaml",
    )
    out = resolve_model("acme/tiny-llm", registry=reg)
    assert out == tmp_path / "home" / "models" / "acme--tiny-llm"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.safetensors",
    ]
    assert torch.equal(load_file(str(out / "model.safetensors"))["vision.w"], torch.arange(6.0).reshape(2, 3))
    assert json.loads((out / "config.json").read_text()) == {"x": 2}
    n = len(hub.log)
    assert resolve_model("acme/tiny-llm", registry=reg) == out  # converted once: no new request
    assert len(hub.log) == n
    # --dir: converted in place, the pickle removed, and not fetched again on the next call
    mine = download("acme/tiny-llm", tmp_path / "mine", registry=reg)
    assert sorted(p.name for p in mine.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.safetensors",
    ]
    n = len(hub.log)
    assert download("acme/tiny-llm", tmp_path / "mine", registry=reg) == mine
    assert len(hub.log) == n


def test_verify_rehashes_while_resolve_trusts_an_unchanged_stamp(server, tmp_path):
    weights = _safetensors_bytes(tmp_path, seed=9)
    reg = _url_registry(server, {"model.safetensors": weights})
    out = download("toy-ckpt", registry=reg, progress=False)
    f = out / "model.safetensors"
    st = f.stat()
    data = bytearray(weights)
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))  # same size, and the mtime put back: invisible to the stamp
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verify("toy-ckpt", registry=reg, full=False).ok
    report = verify("toy-ckpt", registry=reg)
    assert not report.ok and report.problems()[0].detail.startswith("sha256 ")


def test_real_tiny_checkpoint_published_by_url_downloads_and_loads(
    server, tiny_checkpoint, tiny_model, tmp_path
):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from model_zoo import add, load_registry

    reg_file = tmp_path / "team-registry.yaml"
    entry = add(
        "tinygg-tiny-test",
        tiny_checkpoint,
        preset="tiny",
        stage="stage3",
        url=server.url + "/ck/",
        registry_path=reg_file,
        progress=False,
    )
    names = sorted(f.path for f in entry.files)
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    for name in names:  # "upload" the files where the entry says they are served
        server.files[f"/ck/{name}"] = (Path(tiny_checkpoint) / name).read_bytes()
    out = download("tinygg-tiny-test", registry=load_registry([reg_file]), progress=False)
    assert sorted(p.name for p in out.iterdir()) == names
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert AutoProcessor.from_pretrained(out) is not None
    want = tiny_model[0].state_dict()
    got = model.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
