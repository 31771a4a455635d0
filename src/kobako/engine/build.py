"""The classic builder: `docker build` without BuildKit (POST /build).

As dockerd's builder/dockerfile does it: each RUN runs in a container of this engine
and is committed as a layer; COPY and ADD extract the chosen files into a created
(never started) container and commit that; the other instructions only change the
image's config, which the next committed image (or the final one) carries. The
context arrives as a tar and is unpacked with the hostile-tar checks of `docker cp`.

A step whose parent image, stage config and inputs match an earlier one's is taken
from the cache (the image DB's build_cache table). Not done: heredocs, RUN --mount;
BuildKit (version=2) is refused.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import io
import json
import logging
import os
import posixpath
import tarfile
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from kobako.engine.errors import EngineError, InvalidParameter
from kobako.engine.errors import NotFound as EngineNotFound
from kobako.image import config_changes, dockerfile
from kobako.image.errors import NotFound as ImageNotFound

log = logging.getLogger("kobakod.build")

# build args every Dockerfile may use without declaring them (dockerd's BuiltinAllowedBuildArgs)
BUILTIN_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                          "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy",
                          "ALL_PROXY", "all_proxy"})
# the parts of an image config a Dockerfile sets (and a build starts from)
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts",
               "Volumes", "StopSignal", "Healthcheck", "OnBuild", "Shell", "ArgsEscaped")

Emit = Callable[[dict[str, Any]], Awaitable[None]]


class BuildFailed(EngineError):
    """A step failed; `exit_code` is the failing RUN's (the docker CLI exits with it)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.exit_code = code


@dataclass
class BuildOptions:
    dockerfile: str = "Dockerfile"
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False  # run every step (what they make is still remembered)
    cache_from: list[str] = field(default_factory=list)  # only these images' steps are reused
    pull: bool = False
    remove: bool = True  # intermediate containers of successful steps
    force_remove: bool = False  # ... and of the failed one
    quiet: bool = False
    network_mode: str = ""
    host_config: dict[str, Any] = field(default_factory=dict)  # Memory, CpuShares, ...
    platform: str | None = None
    auths: dict[str, Any] = field(default_factory=dict)  # registry -> credentials, for FROM


@dataclass
class Stage:
    name: str
    image_id: str | None  # None: scratch, or nothing committed yet on it
    config: dict[str, Any]
    args: dict[str, str | None] = field(default_factory=dict)  # declared ARGs and values
    history: list[dict[str, Any]] = field(default_factory=list)  # not yet in an image
    cmd_set: bool = False  # a CMD in this stage (an ENTRYPOINT after it keeps it)
    author: str = ""  # MAINTAINER


class Builder:
    """One build: `await Builder(...).run()` returns the final image's id."""

    def __init__(self, containers: Any, images: Any, context: str, options: BuildOptions,
                 emit: Emit):
        self.containers = containers
        self.images = images
        self.context = os.path.realpath(context)
        self.options = options
        self.emit = emit
        self.stages: dict[str, Stage] = {}
        self.global_args: dict[str, str | None] = {}
        self.used_args: set[str] = set()
        self.step = 0
        self.steps = 0
        self._cache_sources: set[str] | None = None  # --cache-from's images and ancestors

    # -- the build -------------------------------------------------------------------

    async def run(self) -> str:
        try:
            instructions = dockerfile.parse(self._read_dockerfile())
        except dockerfile.DockerfileError as err:
            raise InvalidParameter(str(err)) from None
        stages: list[list[dockerfile.Instruction]] = []
        preamble: list[dockerfile.Instruction] = []  # ARGs before the first FROM (parse
        for ins in instructions:                      # refuses anything else there)
            if ins.keyword == "FROM":
                stages.append([ins])
            else:
                (stages[-1] if stages else preamble).append(ins)
        if not stages:
            raise BuildFailed("no build stage in current context")
        if self.options.target:
            names = [_stage_name(s[0]) for s in stages]
            if self.options.target.lower() not in names:
                raise BuildFailed(f"failed to reach build target {self.options.target} "
                                  "in Dockerfile")
            stages = stages[:names.index(self.options.target.lower()) + 1]
        self.steps = len(preamble) + sum(len(s) for s in stages)
        for ins in preamble:
            await self._announce(ins)
            self.global_args.update(self._declare(ins, {}, {}))
        stage = None
        for index, body in enumerate(stages):
            stage = await self._from(body[0], index)
            for ins in body[1:]:
                await self._dispatch(stage, ins)
                await self._say(f" ---> {_short(stage.image_id)}\n")
        assert stage is not None
        if self.options.labels:
            stage.config["Labels"] = {**(stage.config.get("Labels") or {}),
                                      **self.options.labels}
            stage.history.append(_nop(stage.config, "LABEL " + " ".join(
                f"{k}={v}" for k, v in self.options.labels.items())))
        image_id = await self._commit(stage)
        unused = sorted(set(self.options.build_args) - self.used_args - BUILTIN_ARGS)
        if unused:
            await self._say(f"[Warning] One or more build-args [{' '.join(unused)}] were not "
                            "consumed\n")
        return image_id

    def _read_dockerfile(self) -> str:
        name = self.options.dockerfile or "Dockerfile"
        for candidate in [name] if self.options.dockerfile else ["Dockerfile", "dockerfile"]:
            path = self._in_context(candidate)
            if os.path.isfile(path):
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                self._drop_ignored(candidate)
                return text
        raise BuildFailed(f"Cannot locate specified Dockerfile: {name}")

    def _drop_ignored(self, dockerfile_name: str) -> None:
        """As dockerd: once the Dockerfile is read, it and .dockerignore leave the context
        when .dockerignore excludes them (docker-py excludes a Dockerfile it added)."""
        from kobako.image.dockerignore import DockerIgnore, DockerIgnoreError

        ignore_path = self._in_context(".dockerignore")
        if not os.path.isfile(ignore_path):
            return
        with open(ignore_path, encoding="utf-8", errors="replace") as f:
            try:
                ignore = DockerIgnore(f.read())
            except DockerIgnoreError as err:
                raise BuildFailed(str(err)) from None
        for name in (".dockerignore", dockerfile_name):
            if ignore.excluded(os.path.normpath(name)):
                path = self._in_context(name)
                if os.path.isfile(path) or os.path.islink(path):
                    os.unlink(path)

    # -- FROM ------------------------------------------------------------------------

    async def _from(self, ins: dockerfile.Instruction, index: int) -> Stage:
        await self._announce(ins)
        env = {k: v for k, v in self.global_args.items() if v is not None}
        base = dockerfile.expand(ins.args[0], env, ins.escape)
        name = _stage_name(ins)
        if base.lower() == "scratch":
            stage = Stage(name, None, {})
        elif base.lower() in self.stages:
            prior = self.stages[base.lower()]
            stage = Stage(name, await self._commit(prior), json.loads(json.dumps(prior.config)))
        else:
            image_id = await self._base_image(base, ins.flags.get("platform"))
            stage = Stage(name, image_id, await self._image_config(image_id))
        env = stage.config.get("Env") or []
        if not any(e.startswith("PATH=") for e in env):  # as dockerd, in every stage
            stage.config["Env"] = [*env, f"PATH={_DEFAULT_PATH}"]
        self.stages[str(index)] = stage
        if name:
            self.stages[name] = stage
        await self._say(f" ---> {_short(stage.image_id) if stage.image_id else 'scratch'}\n")
        triggers = list(stage.config.get("OnBuild") or [])
        stage.config["OnBuild"] = None  # triggers run once, in the image built on them
        if triggers:
            plural = "s" if len(triggers) > 1 else ""
            await self._say(f"# Executing {len(triggers)} build trigger{plural}\n")
            try:
                nested = dockerfile.parse_triggers(triggers)
            except dockerfile.DockerfileError as err:
                raise BuildFailed(f"the base image's ONBUILD triggers: {err.reason}") from None
            for ins in nested:
                await self._dispatch(stage, ins, announce=False)
        return stage

    async def _base_image(self, ref: str, platform: str | None) -> str:
        if not self.options.pull:
            try:
                return await asyncio.to_thread(self.images.resolve, ref)
            except ImageNotFound:
                pass
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict | None] = asyncio.Queue()

        async def forward() -> None:
            while (message := await queue.get()) is not None:
                if not self.options.quiet:
                    await self.emit(message)

        from kobako.image.reference import parse as parse_reference

        auth = self.options.auths.get(parse_reference(ref).registry)
        forwarding = asyncio.ensure_future(forward())
        try:
            await self.images.pull(
                ref, platform=platform or self.options.platform, auth=auth,
                progress=lambda m: loop.call_soon_threadsafe(queue.put_nowait, dict(m)))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)
            await forwarding
        return await asyncio.to_thread(self.images.resolve, ref)

    async def _image_config(self, image_id: str) -> dict[str, Any]:
        doc = await asyncio.to_thread(self.images.inspect, image_id)
        config = doc.get("Config") or {}
        return {k: json.loads(json.dumps(config[k])) for k in CONFIG_KEYS
                if config.get(k) is not None}

    # -- the other instructions --------------------------------------------------------

    async def _dispatch(self, stage: Stage, ins: dockerfile.Instruction, *,
                        announce: bool = True) -> None:
        if announce:
            await self._announce(ins)
        args = config_changes.expanded_args(ins, self._env(stage))
        if ins.keyword == "RUN":
            if ins.flags:
                raise BuildFailed(f"the --{next(iter(ins.flags))} option requires BuildKit")
            await self._run(stage, ins)
            return
        if ins.keyword in ("COPY", "ADD"):
            await self._copy(stage, ins, args)
            return
        if ins.keyword == "ARG":
            stage.args.update(self._declare(ins, self._env(stage), self.global_args))
        elif ins.keyword == "MAINTAINER":
            stage.author = args[0]
        else:
            try:
                stage.cmd_set = config_changes.apply(stage.config, ins, args,
                                                     cmd_set=stage.cmd_set)
            except ValueError as err:
                raise BuildFailed(str(err)) from None
        # as dockerd's classic builder, every step is an image (a cache point too)
        stage.history.append(_nop(stage.config, _step_comment(ins, args, stage.config),
                                  joined=ins.keyword == "WORKDIR"))
        await self._commit(stage, quiet=False)

    def _declare(self, ins: dockerfile.Instruction, env: dict[str, str],
                 outer: dict[str, str | None]) -> dict[str, str | None]:
        """ARG name[=default]: the build's --build-arg, else the default, else (in a
        stage) the value of a global ARG of that name."""
        declared: dict[str, str | None] = {}
        for word in ins.args:
            name, sep, default = word.partition("=")
            value = dockerfile.expand(default, env, ins.escape) if sep else outer.get(name)
            if name in self.options.build_args:
                self.used_args.add(name)
                value = self.options.build_args[name]
            declared[name] = value
        return declared

    def _env(self, stage: Stage) -> dict[str, str]:
        """What $VAR means in this stage: its ARGs, then its ENV over them (as dockerd)."""
        env = {k: v for k, v in stage.args.items() if v is not None}
        env.update(config_changes.config_env(stage.config))
        return env

    # -- RUN ---------------------------------------------------------------------------

    async def _run(self, stage: Stage, ins: dockerfile.Instruction) -> None:
        if stage.image_id is None:
            raise BuildFailed("RUN on an empty image (FROM scratch): there is no shell")
        command = config_changes.command(stage.config, ins)
        args = {k: v for k, v in stage.args.items() if v is not None}
        env_names = {e.split("=", 1)[0] for e in stage.config.get("Env") or []}
        config = {"Image": stage.image_id, "Cmd": command, "Entrypoint": [""],
                  "Env": list(stage.config.get("Env") or [])
                  + [f"{k}={v}" for k, v in args.items() if k not in env_names],
                  "User": stage.config.get("User") or "",
                  "WorkingDir": stage.config.get("WorkingDir") or "",
                  "AttachStdout": True, "AttachStderr": True, "Labels": {}}
        host_config = {**self.options.host_config,
                       "NetworkMode": self.options.network_mode or "default"}
        key = self._cache_key(stage, "RUN", config)
        if await self._from_cache(stage, key):
            return
        parent = stage.image_id
        cid = (await self.containers.create(config, host_config, {}, None, None))["Id"]
        await self._say(f" ---> Running in {_short(cid)}\n")
        try:
            code = await self._run_container(cid)
            if code != 0:
                shown = json.dumps(command) if ins.json else " ".join(command)
                raise BuildFailed(f"The command '{shown}' returned a non-zero code: {code}",
                                  code=code)
            prefix = f"|{len(args)} " + "".join(f"{k}={v} " for k, v in args.items()) \
                if args else ""
            await self._derive(stage, {"created_by": prefix + " ".join(command)}, cid)
            await self._remember(parent, key, stage.image_id)
        except asyncio.CancelledError:
            await self._remove(cid)  # the client went away: nothing of the build runs on
            raise
        except BaseException:
            if self.options.force_remove:
                await self._remove(cid)
            raise
        if self.options.remove or self.options.force_remove:
            await self._remove(cid)

    async def _run_container(self, cid: str) -> int:
        attached = await self.containers.attach(cid, stream=True, logs=False, stdin=False,
                                                stdout=True, stderr=True, detach_keys=None)
        exited = await self.containers.wait(cid, "next-exit")
        await self.containers.start(cid)
        async for stream, data in attached.output:
            if not self.options.quiet:
                text = data.decode("utf-8", errors="replace")
                if stream == 2:  # stderr in red, as dockerd's classic builder writes it
                    text = f"\x1b[91m{text}\x1b[0m"
                await self.emit({"stream": text})
        return int((await exited).get("StatusCode") or 0)

    async def _remove(self, cid: str) -> None:
        try:
            await self.containers.remove(cid, force=True, volumes=True, link=False)
        except EngineError:
            return  # gone already
        await self._say(f"Removing intermediate container {_short(cid)}\n")

    # -- COPY and ADD ------------------------------------------------------------------

    async def _copy(self, stage: Stage, ins: dockerfile.Instruction, args: list[str]) -> None:
        *sources, dest = args
        dest_path = dest if dest.startswith("/") else \
            os.path.join(stage.config.get("WorkingDir") or "/", dest) + \
            ("/" if dest.endswith("/") or dest in (".", "./") else "")
        chmod = _chmod(ins.flags.get("chmod"))
        from_ref = ins.flags.get("from")
        with tempfile.TemporaryDirectory(dir=os.path.dirname(self.context)) as tmp:
            root = await self._source_root(from_ref, tmp) if from_ref else self.context
            urls = [s for s in sources if _is_url(s)]
            if urls and (ins.keyword == "COPY" or from_ref):
                raise BuildFailed(f"source can't be a URL for {ins.keyword}: {urls[0]}")
            downloaded = [await _download(url, os.path.join(tmp, f"url{n}"))
                          for n, url in enumerate(urls)]
            paths = [p for source in sources if not _is_url(source)
                     for p in _matches(root, source, ins.keyword)] + downloaded
            into_dir = len(paths) > 1 or any(_has_wildcard(s) for s in sources)
            layer = os.path.join(tmp, "layer.tar")
            unpack = set() if ins.keyword == "COPY" or from_ref else set(paths) - set(downloaded)
            with open(layer, "wb") as out:
                await asyncio.to_thread(_write_copy_tar, out, paths, dest_path, into_dir, chmod,
                                        unpack, bool(from_ref))
            key = self._cache_key(stage, ins.keyword, ins.original, ins.flags,
                                  await asyncio.to_thread(_content_digest, layer))
            if await self._from_cache(stage, key):
                return
            parent = stage.image_id
            created_by = f"/bin/sh -c #(nop) {ins.original}"
            if stage.image_id is None:  # FROM scratch: the tar is the layer itself
                await self._derive(stage, {"created_by": created_by}, layer_tar=layer)
            else:
                # the directory the files go into: dest itself, or a file's parent
                into = dest_path.endswith("/") or into_dir or any(
                    os.path.isdir(os.path.realpath(p)) for p in paths)
                target_dir = dest_path.rstrip("/") if into else posixpath.dirname(dest_path)
                await self._extract_and_derive(stage, layer, created_by,
                                               ins.flags.get("chown"), target_dir or "/")
            await self._remember(parent, key, stage.image_id)

    async def _source_root(self, ref: str, tmp: str) -> str:
        """COPY --from: a stage's or an image's files, exported into `tmp`."""
        stage = self.stages.get(ref.lower())
        image_id = await self._commit(stage) if stage else await self._base_image(ref, None)
        created = await self.containers.create({"Image": image_id, "Cmd": ["true"]},
                                               {"NetworkMode": "none"}, {}, None, None)
        root = os.path.join(tmp, "from")
        os.mkdir(root)
        try:
            await unpack(await self.containers.export(created["Id"]), root)
        finally:
            await self.containers.remove(created["Id"], force=True, volumes=True, link=False)
        return root

    async def _extract_and_derive(self, stage: Stage, layer: str, created_by: str,
                                  chown: str | None, target_dir: str = "/") -> None:
        """Extract the layer tar into a created container of the stage's image (with
        --chown as its user, so names resolve in the image) and commit that. With
        --chown, the directories the copy creates up to `target_dir` are that user's
        too (dockerd's MkdirAllAndChownNew); those that were there stay as they were."""
        config = {"Image": stage.image_id, "Cmd": ["true"], "User": chown or ""}
        cid = (await self.containers.create(config, {"NetworkMode": "none"}, {}, None,
                                            None))["Id"]
        try:
            new_dirs = await self._missing_dirs(cid, target_dir) if chown else []
            with open(layer, "rb") as f:
                await self.containers.archive_put(cid, "/", f, no_overwrite_dir_non_dir=False,
                                                  copy_uid_gid=bool(chown))
            if new_dirs:
                dirs = io.BytesIO()
                with tarfile.open(fileobj=dirs, mode="w", format=tarfile.PAX_FORMAT) as tf:
                    for path in new_dirs:
                        info = tarfile.TarInfo(path.lstrip("/"))
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        tf.addfile(info)
                dirs.seek(0)
                await self.containers.archive_put(cid, "/", dirs, no_overwrite_dir_non_dir=False,
                                                  copy_uid_gid=True)
            await self._derive(stage, {"created_by": created_by}, cid)
        finally:
            await self.containers.remove(cid, force=True, volumes=True, link=False)

    async def _missing_dirs(self, cid: str, path: str) -> list[str]:
        """`path` and those of its parents the container does not have, top first."""
        missing: list[str] = []
        while path not in ("/", ""):
            try:
                await self.containers.archive_stat(cid, path)
                break
            except EngineNotFound:
                missing.insert(0, path)
                path = posixpath.dirname(path)
        return missing

    async def _derive(self, stage: Stage, entry: dict[str, Any], container: str | None = None,
                      layer_tar: str | None = None) -> None:
        """The stage's next image: the container's changes (or a tar) as a layer, the
        config changes since the last image in its history."""
        history = [{**h, "empty_layer": True} for h in stage.history] + [entry]
        stage.history = []
        stage.image_id = await asyncio.to_thread(
            self.images.derive, stage.image_id, stage.config, history, layer_from=container,
            layer_tar=layer_tar, extra={"author": stage.author} if stage.author else None)

    async def _commit(self, stage: Stage, quiet: bool = True) -> str:
        """The stage as an image: its last one, with the config changes since, if any."""
        if stage.image_id is not None and not stage.history:
            return stage.image_id
        key = self._cache_key(stage, "commit")
        parent = stage.image_id
        if await self._from_cache(stage, key, quiet=quiet):
            assert stage.image_id is not None
            return stage.image_id
        history = [{**h, "empty_layer": True} for h in stage.history]
        stage.history = []
        stage.image_id = await asyncio.to_thread(
            self.images.derive, stage.image_id, stage.config, history,
            extra={"author": stage.author} if stage.author else None)
        await self._remember(parent, key, stage.image_id)
        return stage.image_id

    # -- the cache ---------------------------------------------------------------------

    def _cache_key(self, stage: Stage, *step: Any) -> str:
        """What a step does, from where: the stage's config and not yet committed history,
        and the step's own inputs (its command and environment, or its files' tar)."""
        doc = [stage.config, stage.history, stage.author, *step]
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    async def _from_cache(self, stage: Stage, key: str, quiet: bool = False) -> bool:
        if self.options.no_cache:
            return False
        image_id = await asyncio.to_thread(self.images.cached_step, stage.image_id, key)
        if image_id is None or not await self._cache_allows(image_id):
            return False
        stage.image_id, stage.history = image_id, []
        if not quiet:
            await self._say(" ---> Using cache\n")
        return True

    async def _cache_allows(self, image_id: str) -> bool:
        """With --cache-from, as dockerd: a step's image is reused only if it is one of
        those images or their ancestors (names that are no image are skipped)."""
        if not self.options.cache_from:
            return True
        if self._cache_sources is None:
            self._cache_sources = set()
            for ref in self.options.cache_from:
                try:
                    doc = await asyncio.to_thread(self.images.inspect, ref)
                except ImageNotFound:
                    log.warning("build: no image %s for cache resolution, skipped", ref)
                    continue
                while doc and doc["Id"] not in self._cache_sources:
                    self._cache_sources.add(doc["Id"])
                    doc = doc.get("Parent") and await asyncio.to_thread(
                        self.images.inspect, doc["Parent"])
        return image_id in self._cache_sources

    async def _remember(self, parent: str | None, key: str, image_id: str | None) -> None:
        if image_id is not None:
            await asyncio.to_thread(self.images.cache_step, parent, key, image_id)

    # -- output and paths --------------------------------------------------------------

    async def _announce(self, ins: dockerfile.Instruction) -> None:
        self.step += 1
        await self._say(f"Step {self.step}/{self.steps} : {ins.original}\n")

    async def _say(self, text: str) -> None:
        if not self.options.quiet:
            await self.emit({"stream": text})

    def _in_context(self, name: str) -> str:
        path = os.path.realpath(os.path.join(self.context, name))
        if path != self.context and not path.startswith(self.context + os.sep):
            raise BuildFailed(f"forbidden path outside the build context: {name}")
        return path


async def build(containers: Any, images: Any, context: str, options: BuildOptions,
                emit: Emit) -> str:
    """Run the build, tag the image, and report it as dockerd does; its id."""
    from kobako.image.reference import parse as parse_reference

    image_id = await Builder(containers, images, context, options, emit).run()
    await emit({"aux": {"ID": image_id}})
    if options.quiet:
        await emit({"stream": image_id + "\n"})
    else:
        await emit({"stream": f"Successfully built {_short(image_id)}\n"})
    for tag in options.tags:
        await asyncio.to_thread(images.tag, image_id, tag)
        if not options.quiet:
            await emit({"stream": f"Successfully tagged {parse_reference(tag).familiar()}\n"})
    return image_id


# -- helpers ---------------------------------------------------------------------------

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _stage_name(ins: dockerfile.Instruction) -> str:
    """FROM image AS name: the name, lower-cased as dockerd compares it."""
    return ins.args[2].lower() if len(ins.args) == 3 else ""


def _short(image_or_container: str | None) -> str:
    return (image_or_container or "").removeprefix("sha256:")[:12]


def _step_comment(ins: dockerfile.Instruction, args: list[str], config: dict[str, Any]) -> str:
    """What dockerd's classic builder writes of a config step in the image's history
    (Go's %v and %q of lists: `[a b]`, `["a" "b"]`)."""
    keyword = ins.keyword
    if keyword in ("ENV", "LABEL"):
        pairs = zip(args[::2], args[1::2], strict=True)  # apply() checked them
        return keyword + "".join(f" {k}={v}" for k, v in pairs)
    if keyword in ("CMD", "ENTRYPOINT"):
        command = config.get("Cmd" if keyword == "CMD" else "Entrypoint") or []
        quoted = " ".join(json.dumps(a, ensure_ascii=False) for a in command)
        return f"{keyword} [{quoted}]"
    if keyword in ("VOLUME", "SHELL"):
        return f"{keyword} [{' '.join(args)}]"
    if keyword == "WORKDIR":
        return f"WORKDIR {config.get('WorkingDir')}"
    if keyword in ("EXPOSE", "USER", "STOPSIGNAL", "MAINTAINER"):
        return f"{keyword} {' '.join(args)}"
    return ins.original  # ARG, ONBUILD, HEALTHCHECK


def _nop(config: dict[str, Any], text: str, joined: bool = False) -> dict[str, Any]:
    """A config step's history entry as dockerd writes it: the stage's shell, "#(nop) "
    and the comment as one more word (two spaces), or in the same word for WORKDIR."""
    shell = " ".join(config.get("Shell") or ["/bin/sh", "-c"])
    return {"created_by": f"{shell} #(nop) {'' if joined else ' '}{text}"}


def _chmod(text: str | None) -> int | None:
    if not text:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise BuildFailed(f"invalid --chmod={text}: want an octal mode")
    return mode


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


async def _download(url: str, directory: str) -> str:
    """ADD <url>: the file, named after the URL's last path element, mode 600 and the
    server's Last-Modified as its mtime (as dockerd); never unpacked."""
    import email.utils
    import urllib.parse

    import aiohttp

    os.mkdir(directory)
    path = os.path.join(directory, os.path.basename(urllib.parse.urlparse(url).path)
                        or "download")
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            if resp.status != 200:
                raise BuildFailed(f"ADD {url}: the server answered {resp.status} {resp.reason}")
            with open(path, "wb") as f:
                async for chunk in resp.content.iter_chunked(1 << 20):
                    await asyncio.to_thread(f.write, chunk)
            modified = resp.headers.get("Last-Modified")
    except aiohttp.ClientError as err:
        raise BuildFailed(f"ADD {url}: {err}") from None
    os.chmod(path, 0o600)
    if modified:
        try:
            stamp = email.utils.parsedate_to_datetime(modified).timestamp()
            os.utime(path, (stamp, stamp))
        except (TypeError, ValueError):
            pass  # an unreadable date: the download's own time stays
    return path


def _has_wildcard(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _matches(root: str, source: str, keyword: str) -> list[str]:
    """Paths under `root` that `source` names, wildcards as Go's filepath.Match (which
    never crosses a "/"), each resolved within the root."""
    clean = os.path.normpath("/" + source).lstrip("/")
    if not _has_wildcard(clean):
        path = os.path.join(root, clean) if clean else root
        if not os.path.lexists(path):
            raise BuildFailed(f"{keyword} failed: file not found in build context or "
                              f"excluded by .dockerignore: stat {clean}: file does not exist")
        return [_within(root, path, source)]
    found = [root]
    for part in clean.split("/"):
        found = [os.path.join(d, name) for d in found if os.path.isdir(d)
                 for name in sorted(os.listdir(d)) if fnmatch.fnmatchcase(name, part)]
    if not found:
        raise BuildFailed(f"{keyword} failed: no source files were specified")
    return [_within(root, p, source) for p in found]


def _within(root: str, path: str, source: str) -> str:
    """`path`, refused if following its symlinks leaves the root."""
    real = os.path.realpath(path)
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        raise BuildFailed(f"forbidden path outside the build context: {source}")
    return path


def _write_copy_tar(out: BinaryIO, paths: list[str], dest: str, into_dir: bool,
                    chmod: int | None, unpack: set[str], keep_owner: bool = False) -> None:
    """The files as a tar rooted at "/", each where Docker's COPY puts it: a directory's
    contents into dest; a file to dest, or into it when dest ends in "/" or there are
    several sources. Owned by root, or as they are with `keep_owner` (COPY --from; --chown
    applies when extracted); --chmod sets modes. The paths in `unpack` (ADD's local
    files) are unpacked into dest if they are tars."""
    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if not keep_owner:
            info.uid = info.gid = 0
        info.uname = info.gname = ""
        if chmod is not None and not info.issym():
            info.mode = chmod
        return info

    directory = dest.rstrip("/") or "/"
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for named in paths:
            path = os.path.realpath(named)  # a source that is a symlink: what it points to
            if os.path.isdir(path):
                for name in sorted(os.listdir(path)):
                    tf.add(os.path.join(path, name), arcname=_arc(directory, name),
                           filter=owned)
            elif named in unpack and _is_archive(path):
                with tarfile.open(path, mode="r:*") as archive:
                    for member in archive:
                        data = archive.extractfile(member) if member.isreg() else None
                        member.name = _arc(directory, member.name)
                        if member.islnk():
                            member.linkname = _arc(directory, member.linkname)
                        tf.addfile(member, data)
            else:
                into = dest.endswith("/") or into_dir
                target = os.path.join(directory, os.path.basename(named)) if into else dest
                tf.add(path, arcname=_arc(target, ""), recursive=False, filter=owned)


def _content_digest(tar_path: str) -> str:
    """A digest of what COPY puts in the image: names, types, modes, owners, link targets
    and contents, not the times (as dockerd's cache ignores them)."""
    digest = hashlib.sha256()
    with tarfile.open(tar_path, mode="r") as tf:
        for member in tf:
            digest.update(json.dumps([member.name, member.type.decode(), member.mode,
                                      member.uid, member.gid, member.linkname,
                                      member.size]).encode())
            if member.isreg():
                data = tf.extractfile(member)
                assert data is not None
                while chunk := data.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def _arc(directory: str, name: str) -> str:
    return os.path.normpath(os.path.join(directory, name)).lstrip("/") or "."


def _is_archive(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
        return True
    return tarfile.is_tarfile(path)


async def unpack(chunks: AsyncIterator[bytes], directory: str) -> None:
    """A tar (maybe compressed) arriving in chunks, unpacked into `directory` as it
    comes, with the checks `docker cp` makes against hostile archives: the build
    context from the request, or an image's files for COPY --from."""
    from kobako.engine import archive

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    reader_fd, writer_fd = os.pipe()

    async def feed() -> None:
        try:
            with os.fdopen(writer_fd, "wb") as writer:
                async for chunk in chunks:
                    await asyncio.to_thread(writer.write, chunk)
        except BrokenPipeError:
            pass  # the extraction stopped reading: it says why

    feeding = asyncio.ensure_future(feed())
    try:
        with os.fdopen(reader_fd, "rb") as reader:
            await asyncio.to_thread(archive.extract_tar, fd, "/", reader, "the build context")
    except InvalidParameter as err:
        raise InvalidParameter(f"invalid build context: {err}") from None
    finally:
        os.close(fd)
        await feeding  # the reader is closed: a feeder still writing stops (EPIPE)
