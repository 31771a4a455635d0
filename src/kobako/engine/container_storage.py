"""The container service's storage operations: cp (archive stat/get/put), changes,
export, commit and update. A mixin of ContainerService; the work itself is in
kobako.engine.archive, kobako.engine.changes and the image library.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from kobako.engine.errors import Conflict, EngineError, InvalidParameter

if TYPE_CHECKING:
    from kobako.engine.containers import Container

log = logging.getLogger("kobakod.containers")


class StorageOperations:

    _UPDATABLE = ("CpuShares", "Memory", "NanoCpus", "CpuPeriod", "CpuQuota", "CpusetCpus",
                  "CpusetMems", "MemoryReservation", "MemorySwap", "BlkioWeight",
                  "PidsLimit", "CpuRealtimePeriod", "CpuRealtimeRuntime", "OomKillDisable",
                  "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
                  "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "MemorySwappiness")
    _IMAGE_CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Cmd", "Entrypoint", "Volumes",
                          "WorkingDir", "Labels", "StopSignal", "Healthcheck", "OnBuild",
                          "Shell", "ArgsEscaped")

    async def _container_root(self, c: Container):
        """A context manager giving an fd of the container's root, and whether it runs.

        A stopped container gets a private view (rootfs, volumes and binds mounted in a
        mount namespace of its own); its lock is held so it cannot start meanwhile.
        """
        from contextlib import asynccontextmanager

        from kobako.engine import archive
        from kobako.image.snapshots import MountSpec

        @asynccontextmanager
        async def opened():
            async with c.lock:
                if c.running:
                    pid = c.state["Pid"]
                    with archive.running_root(pid) as fd:
                        if not c.running or c.state["Pid"] != pid:
                            raise Conflict(f"Container {c.id} stopped while being read")
                        yield fd
                    return
                mounts = [archive.ViewMount(m["Destination"], m["Source"], not m.get("RW", True))
                          for m in c.doc.get("Mounts") or []
                          if m.get("Type") in ("volume", "bind") and m.get("Source")
                          and os.path.exists(m["Source"])]
                spec = MountSpec(**c.private["rootfs"])
                readonly = bool(c.doc["HostConfig"].get("ReadonlyRootfs"))
                manager = archive.stopped_root(spec, mounts, readonly)
                fd = await asyncio.to_thread(manager.__enter__)
                try:
                    yield fd
                finally:
                    await asyncio.to_thread(manager.__exit__, None, None, None)

        return opened()

    async def archive_stat(self, ref: str, path: str) -> dict:
        from kobako.engine import archive

        c = self.get(ref)
        if not path:
            raise InvalidParameter("path is required")
        async with await self._container_root(c) as fd:
            return (await asyncio.to_thread(archive.stat_path, fd, path, ref)).to_json()

    async def archive_get(self, ref: str, path: str):
        """(stat document, async iterator of the tar's bytes)."""
        from kobako.engine import archive

        c = self.get(ref)
        if not path:
            raise InvalidParameter("path is required")
        opened = await self._container_root(c)
        fd = await opened.__aenter__()
        try:
            def work(out, ready) -> None:
                ready(archive.stat_path(fd, path, ref).to_json())
                archive.write_tar(fd, path, out, ref)

            head, chunks = await archive.thread_stream(work)
        except BaseException:
            await opened.__aexit__(None, None, None)
            raise

        async def stream():
            try:
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()
                await opened.__aexit__(None, None, None)

        return head, stream()

    async def archive_put(self, ref: str, path: str, body, *, no_overwrite_dir_non_dir: bool,
                          copy_uid_gid: bool) -> None:
        """Extract the tar `body` (a blocking file-like) into the directory `path`."""
        from kobako.engine import archive
        from kobako.engine.users import resolve_user

        c = self.get(ref)
        if not path:
            raise InvalidParameter("path is required")
        readonly = bool(c.doc["HostConfig"].get("ReadonlyRootfs"))
        message = "container rootfs is marked read-only" if readonly else ""

        def work(fd: int) -> None:
            owner = None
            if copy_uid_gid:
                uid, gid, _ = resolve_user(f"/proc/self/fd/{fd}", c.doc["Config"].get("User"))
                owner = (uid, gid)
            archive.extract_tar(fd, path, body, ref, owner=owner, read_only_message=message,
                                no_overwrite_dir_non_dir=no_overwrite_dir_non_dir)

        async with await self._container_root(c) as fd:
            await asyncio.to_thread(work, fd)
        self._event(c, "extract-to-dir")

    async def changes(self, ref: str) -> list[dict]:
        from kobako.engine.changes import container_changes

        c = self.get(ref)
        return await asyncio.to_thread(container_changes, self.images, c.id)

    async def export(self, ref: str):
        from kobako.engine import archive

        c = self.get(ref)

        def work(out, ready) -> None:
            ready(None)
            self.images.export(c.id, out)

        _, chunks = await archive.thread_stream(work)
        self._event(c, "export")
        return chunks

    async def commit(self, ref: str, *, reference: str | None, changes: list[str],
                     config: dict | None, comment: str, author: str, pause: bool) -> dict:
        c = self.get(ref)
        # Docker's commit: the request's Config, its empty fields filled from the container's
        base = c.doc["Config"]
        merged = {k: v for k, v in (config or {}).items() if v not in (None, "", [], {})}
        image_config = {k: merged.get(k, base.get(k)) for k in self._IMAGE_CONFIG_KEYS
                        if merged.get(k, base.get(k)) is not None}
        paused_here = pause and c.running and not c.state.get("Paused")
        if paused_here:
            paused_here = await self._try(self._runtime().pause, c.id)
        try:
            image_id = await asyncio.to_thread(
                lambda: self.images.commit(c.id, reference=reference, changes=changes,
                                           config=image_config, comment=comment,
                                           author=author, container_config=c.doc["Config"],
                                           created_by=" ".join(base.get("Cmd") or [])))
        except ValueError as err:
            raise InvalidParameter(str(err)) from None
        finally:
            if paused_here:
                await self._try(self._runtime().resume, c.id)
        self._event(c, "commit", {"comment": comment, "imageID": image_id,
                                  "imageRef": reference or ""})
        return {"Id": image_id}

    @staticmethod
    async def _try(operation, container_id: str) -> bool:
        """Pause or resume for a commit, which goes on without (as dockerd's does) when
        the container ended meanwhile."""
        from kobako.runtime.errors import RuntimeFailure

        try:
            await asyncio.to_thread(operation, container_id)
            return True
        except (RuntimeFailure, OSError) as err:
            log.info("commit of %s goes on unpaused: %s", container_id[:12], err)
            return False

    async def update(self, ref: str, update: dict) -> dict:
        from kobako.engine import oci_spec

        c = self.get(ref)
        hc = c.doc["HostConfig"]
        update = {k: v for k, v in (update or {}).items() if v is not None}
        policy = update.pop("RestartPolicy", None)
        if policy is not None and policy.get("Name") is not None:
            if hc.get("AutoRemove") and policy.get("Name") not in ("", "no"):
                raise InvalidParameter("Restart policy cannot be updated because AutoRemove "
                                       "is enabled for the container")
            self._check_host_config({"RestartPolicy": policy})
        memory, swap = update.get("Memory") or 0, update.get("MemorySwap") or 0
        if memory and not swap and 0 < (hc.get("MemorySwap") or 0) < memory:
            raise Conflict("Conflicting options: Memory limit should be smaller than already "
                           "set memoryswap limit, update the memoryswap at the same time")
        resources = {k: v for k, v in update.items() if k in self._UPDATABLE}
        merged = {**hc, **resources}
        warnings = oci_spec.verify_host_config(merged, c.doc["Config"], update=True)
        resources = {k: merged[k] for k in resources}  # less what this host cannot limit
        if c.running and resources:
            from kobako.runtime.errors import RuntimeFailure

            try:
                await asyncio.to_thread(self._runtime().update, c.id,
                                        oci_spec.resources(resources))
            except (RuntimeFailure, OSError) as err:
                raise EngineError(f"Cannot update container {c.id}: {err}") from None
        hc.update(resources)
        if policy is not None:
            hc["RestartPolicy"] = {"Name": policy.get("Name") or "no",
                                   "MaximumRetryCount": int(policy.get("MaximumRetryCount")
                                                            or 0)}
        self.store.update(c.doc)
        self._event(c, "update")
        return {"Warnings": warnings}
