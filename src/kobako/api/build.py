"""POST /build: the classic builder (kobako.engine.build), streamed as dockerd streams it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from kobako.api.context import ctx
from kobako.api.errors import BadRequest
from kobako.api.http import Request, Response, StreamResponse, json_response
from kobako.api.images import credentials, familiar_ref, json_header, progress_call
from kobako.api.params import bool_param, int_param, json_param, str_param

# query parameters that become the RUN containers' resources
_RESOURCES = {"memory": "Memory", "memswap": "MemorySwap", "cpushares": "CpuShares",
              "cpuperiod": "CpuPeriod", "cpuquota": "CpuQuota", "shmsize": "ShmSize"}


async def build(request: Request) -> StreamResponse:
    from kobako.engine.build import BuildOptions, unpack
    from kobako.engine.build import build as run_build

    if str_param(request, "version") == "2":
        raise BadRequest("BuildKit (version=2) is not supported by kobako: "
                         "use the classic builder (DOCKER_BUILDKIT=0)")
    if str_param(request, "remote"):
        raise BadRequest("a remote build context (a URL or a git repository) is not "
                         "supported by kobako: send the context as the request body")
    tags = request.query.getall("t", [])
    _check_tags(tags)
    host_config: dict[str, Any] = {key: int_param(request, name)
                                   for name, key in _RESOURCES.items()
                                   if int_param(request, name)}
    for name, key in (("cpusetcpus", "CpusetCpus"), ("cpusetmems", "CpusetMems"),
                      ("cgroupparent", "CgroupParent")):
        if str_param(request, name):
            host_config[key] = str_param(request, name)
    # --add-host: joined with commas by the docker CLI, repeated by docker-py
    extra_hosts = [host for value in request.query.getall("extrahosts", [])
                   for host in value.split(",") if host]
    if extra_hosts:
        host_config["ExtraHosts"] = extra_hosts
    if str_param(request, "ulimits"):
        try:
            host_config["Ulimits"] = json.loads(str_param(request, "ulimits"))
        except ValueError:
            raise BadRequest("ulimits: invalid JSON") from None
    options = BuildOptions(
        dockerfile=str_param(request, "dockerfile") or "", tags=tags,
        build_args=json_param(request, "buildargs"), labels=json_param(request, "labels"),
        cache_from=[str(ref) for ref in json_param(request, "cachefrom", list)],
        target=str_param(request, "target") or "", pull=bool_param(request, "pull"),
        no_cache=bool_param(request, "nocache"),
        remove=bool_param(request, "rm", default=True),
        force_remove=bool_param(request, "forcerm"), quiet=bool_param(request, "q"),
        network_mode=str_param(request, "networkmode") or "", host_config=host_config,
        platform=str_param(request, "platform") or None, auths=_registry_config(request))
    service = ctx(request)
    scratch = os.path.join(service.config.data_root, "tmp")
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="build-", dir=scratch)
    try:
        context = os.path.join(workdir, "context")
        os.mkdir(context)
        await unpack(request.content.iter_chunked(1 << 20), context)

        async def start(progress):
            async def emit(message: dict[str, Any]) -> None:
                progress(message)
            image_id = await run_build(service.containers, service.image_backend(), context,
                                       options, emit)
            for tag in options.tags:
                service.events.publish("image", "tag", image_id, {"name": familiar_ref(tag)})
            return image_id

        return await progress_call(request, start)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def prune(request: Request) -> Response:
    """The classic builder keeps no cache: nothing to prune (`docker system prune`)."""
    return json_response({"CachesDeleted": None, "SpaceReclaimed": 0})


def _check_tags(tags: list[str]) -> None:
    from kobako.image.reference import parse

    for tag in tags:
        try:
            parse(tag)
        except ValueError as err:
            raise BadRequest(f"invalid tag {tag!r}: {err}") from None


def _registry_config(request: Request) -> dict[str, Any]:
    """X-Registry-Config: {registry: AuthConfig}, as credentials by registry."""
    from kobako.image.reference import normalize_registry

    data = json_header(request, "X-Registry-Config")
    auths = {}
    for registry, cfg in (data.items() if isinstance(data, dict) else []):
        creds = credentials(cfg) if isinstance(cfg, dict) else None
        if creds is not None:
            auths[normalize_registry(registry)] = creds
    return auths


def register(add: Any) -> None:
    add("POST", "/build", build)
    add("POST", "/build/prune", prune)
