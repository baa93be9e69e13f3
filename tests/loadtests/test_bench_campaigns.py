"""`loadtests.bench_campaigns --caps`: the bench campaign's frequency caps reach the server."""
import asyncio

import pytest

from loadtests import bench_campaigns as bc
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cgrpc
from tests.conftest import serving


@pytest.mark.parametrize("argv, caps", [([], []), (["--caps"], list(bc.CAPS))])
async def test_caps_reach_the_campaign_spec_and_the_warm_up_stays_under_them(tmp_path, argv,
                                                                             caps):
    """Without `--caps` the campaign has none (the bench as before); with it, the server's
    spec holds `CAPS`, and the warm-up's rewarded pulls all went through, none capped (a
    capped one's reward would fail the set-up)."""
    from server.config import Settings
    args = bc.parse_args([*argv, "--arms", "2"])
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets")
    async with serving(settings) as (server, channel):
        await asyncio.to_thread(bc.create_campaign, f"127.0.0.1:{server.port}", args.arms,
                                args.policy, None, args.caps)
        stub = cgrpc.CampaignServiceStub(channel)
        spec = (await stub.GetCampaign(cpb.GetCampaignRequest(campaign_id="bench"))).spec
        stats = await stub.GetCampaignStats(cpb.GetCampaignStatsRequest(campaign_id="bench"))
    assert [(c.channel, c.max, c.window_seconds) for c in spec.frequency_caps] == caps
    assert sum(v.decisions for v in stats.variants) == 50 * args.arms
