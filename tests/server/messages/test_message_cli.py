"""`python -m clients message compose|preview` against a real server."""
import asyncio
import json

from protos.tailor.v1 import campaign_pb2 as cpb
from tests.conftest import run_module

from .conftest import email_spec, opt_in


async def test_the_cli_composes_and_previews(campaigns, profiles, tailor_server):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await opt_in(profiles, "cli-user")  # opted in, no first_name: the default greets them
    server = ["--server", f"127.0.0.1:{tailor_server.port}", "--timeout", "30"]
    out = await asyncio.to_thread(run_module, "clients", "message", "preview", *server,
                                  "--campaign", "mail", "--attribute", "first_name=Ann")
    preview = json.loads(out.stdout)
    assert preview["parts"]["subject"] == "Hi Ann" and not preview.get("decision_id")
    out = await asyncio.to_thread(run_module, "clients", "message", "compose", *server,
                                  "--campaign", "mail", "--user", "cli-user")
    composed = json.loads(out.stdout)
    assert composed["parts"]["subject"] == "Hi there" and composed["decision_id"]
    assert composed["headers"]["Message-ID"] == f"<{composed['decision_id']}@tailor.invalid>"
