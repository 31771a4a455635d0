"""ImageService.push then ImageService.pull (parallel unpack) through a real registry."""

import asyncio
import uuid

import pytest
from registry_fixtures import Registry
from test_image_service import EXPECTED, build_multilayer, merged_view

from kobako.image.images import ImageService

pytestmark = pytest.mark.root


@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_push_pull_roundtrip_through_service(tmp_path, driver):
    a = ImageService(tmp_path / "kbtest-a", str(tmp_path / "kbtest-a.db"), driver=driver)
    b = ImageService(tmp_path / "kbtest-b", str(tmp_path / "kbtest-b.db"), driver=driver)
    try:
        with Registry(tmp_path) as reg:
            image_id = build_multilayer(a, "kbtest/multi:1")
            ref = f"{reg.host}/kbtest/multi-{uuid.uuid4().hex[:6]}:v1"
            a.tag("kbtest/multi:1", ref)
            pushed = asyncio.run(a.push(ref))
            messages: list[dict] = []
            pulled_id = asyncio.run(b.pull(ref, progress=messages.append))
            assert pulled_id == image_id
            info = b.inspect(ref)
            assert info["RepoDigests"] == [ref.rsplit(":", 1)[0] + "@" + pushed.digest]
            assert b.get(ref).manifest_digest == pushed.digest
            assert merged_view(b, ref) == EXPECTED
            statuses = {m.get("status") for m in messages}
            assert "Pull complete" in statuses
            # a second pull changes nothing and unpacks nothing again
            layers_before = sorted(b.snapshots.layer_ids())
            assert asyncio.run(b.pull(ref)) == image_id
            assert sorted(b.snapshots.layer_ids()) == layers_before
            assert b.resolve(ref.rsplit(":", 1)[0] + "@" + pushed.digest) == image_id
    finally:
        a.close()
        b.close()
