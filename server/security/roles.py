"""Who may call what: the one table of every RPC and the roles that may call it.

`RPC_ROLES` lists every method of every Tailor service. A test enumerates the services of the
generated descriptors (protos/tailor/v1) and fails when an RPC is missing here, so a new RPC
cannot ship unguarded. Roles may be redefined (or new ones added) in the auth config as lists of
method patterns (`fnmatch`, e.g. "/tailor.v1.CampaignService/Get*"); `RoleTable` resolves a
method to the set of roles allowed to call it once, then answers with one dict hit.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

__all__ = ["ANY_AUTHENTICATED", "BUILTIN_ROLES", "OPEN_PREFIXES", "PII_READER", "REFLECTION",
           "ROLE_NAMES", "RPC_ROLES", "SENSITIVE", "SMALL_REQUEST_PREFIXES", "RoleTable",
           "default_patterns"]

PII_READER = "pii-reader"
ANY_AUTHENTICATED = "*"
"""A pseudo-role: any authenticated principal, whatever its roles."""

_PROFILE = "/tailor.v1.ProfileService/"
_CAMPAIGN = "/tailor.v1.CampaignService/"
_MODEL = "/tailor.v1.ModelAdminService/"
_ATTRIBUTION = "/tailor.v1.AttributionService/"
_RECOMMEND = "/tailor.v1.RecommendationService/"
_MESSAGING = "/tailor.v1.MessagingService/"
_CATALOG = "/tailor.v1.CatalogService/"
AUDIT_PATTERN = "/tailor.v1.AuditService/*"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

RPC_ROLES: dict[str, tuple[str, ...]] = {
    _MODEL + "PushBundle": ("admin",),
    _MODEL + "Rollback": ("admin",),
    _MODEL + "GetModelStatus": ("admin", "analyst"),
    _MODEL + "PromoteCanary": ("admin",),
    _MODEL + "AbortCanary": ("admin",),
    _MODEL + "GetModelStats": ("admin", "analyst"),  # counts per version: no user in them
    _MODEL + "ExportImpressions": ("analyst", PII_READER),  # like ExportEvents
    _MODEL + "GetDriftReport": ("admin", "analyst"),
    _CAMPAIGN + "CreateCampaign": ("admin",),
    _CAMPAIGN + "UpdateCampaign": ("admin",),
    _CAMPAIGN + "ArchiveCampaign": ("admin",),
    _CAMPAIGN + "GetCampaign": ("admin", "analyst"),
    _CAMPAIGN + "ListCampaigns": ("admin", "analyst"),
    _CAMPAIGN + "GetCampaignStats": ("admin", "analyst"),
    _CAMPAIGN + "GetSampleSize": ("admin", "analyst"),
    _CAMPAIGN + "ExportDecisions": ("analyst", PII_READER),
    _CAMPAIGN + "ChooseVariant": ("decider",),
    _CAMPAIGN + "ReportReward": ("decider",),
    _CAMPAIGN + "PlanCampaign": ("decider",),
    _RECOMMEND + "Recommend": ("decider",),
    _RECOMMEND + "RecommendBatch": ("decider",),
    _PROFILE + "TrackEvents": ("tracker",),
    _PROFILE + "TrackEventStream": ("tracker",),
    _PROFILE + "UpsertAttributes": ("tracker",),
    _PROFILE + "SetConsent": ("tracker",),
    _PROFILE + "DeleteProfile": ("admin",),
    _PROFILE + "GetProfile": ("analyst", PII_READER),
    _PROFILE + "ExportEvents": ("analyst", PII_READER),
    _PROFILE + "ExportProfile": (PII_READER,),  # one person's everything: access requests only
    _PROFILE + "ExportTombstones": ("analyst", PII_READER),  # what `training export` also reads
    # The suppression list: who feeds delivery outcomes adds (as events can), lifting one
    # re-opens contact to a bounced or complaining address (admin, like erasure), and asking
    # about an address tells whether that person bounced, complained or unsubscribed, and
    # when, of any address the caller names: an unmasked read (audited), for pii-reader, and
    # for admin, who lifts entries (and renders any user's data in previews).
    _PROFILE + "AddSuppression": ("tracker",),
    _PROFILE + "RemoveSuppression": ("admin",),
    _PROFILE + "CheckSuppression": ("admin", PII_READER),
    _ATTRIBUTION + "Attribute": ("analyst",),
    _ATTRIBUTION + "AttributeStream": ("analyst",),
    _ATTRIBUTION + "AttributeStored": ("analyst",),
    # A composed message is a decision (like ChooseVariant) rendered with the user's
    # attributes: deciders send it. Previews render any user's data: campaign authors only.
    _MESSAGING + "ComposeMessage": ("decider",),
    _MESSAGING + "PreviewMessage": ("admin",),
    # Sending to an audience is a campaign operation (like creating one); progress is a stat.
    _MESSAGING + "SendCampaign": ("admin",),
    _MESSAGING + "GetSendProgress": ("admin", "analyst"),
    _MESSAGING + "CancelSend": ("admin",),  # stops a send, as SendCampaign starts one
    _MESSAGING + "ListDeadLetters": ("admin",),
    _MESSAGING + "RetryDeadLetter": ("admin",),
    # Ping runs the whole stack for benchmarks: any authenticated caller, so an anonymous one
    # cannot load the server through it; liveness without credentials is what health is for.
    "/tailor.v1.DiagnosticsService/Ping": (ANY_AUTHENTICATED,),
    # The catalog changes what every user is recommended, like a bundle push: admins.
    _CATALOG + "UpsertItems": ("admin",),
    _CATALOG + "RemoveItems": ("admin",),
    "/tailor.v1.AuditService/TailAudit": ("auditor",),  # the audit log's room (server/security/audit)
    # Reflection lists every service and method and describes their messages: any caller
    # known to the auth config (grpcurl with its token), never an anonymous one.
    REFLECTION: (ANY_AUTHENTICATED,),
}
"""Every Tailor RPC → the roles that may call it (built-in roles; the auth config may redefine
them). `auditor` also gets every AuditService method through `AUDIT_PATTERN`."""

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods anyone may call, authenticated or not: health checks (probes, load balancers)."""
SMALL_REQUEST_PREFIXES = (*OPEN_PREFIXES, "/grpc.reflection.")
"""Methods whose request messages are a service or symbol name: at most
`Limits.open_request_bytes` each (reflection, which `Settings.reflection` can turn off, takes
any authenticated caller: `RPC_ROLES`)."""

SENSITIVE = frozenset({
    _MODEL + "PushBundle", _MODEL + "Rollback", _MODEL + "PromoteCanary", _MODEL + "AbortCanary",
    _CAMPAIGN + "CreateCampaign", _CAMPAIGN + "UpdateCampaign", _CAMPAIGN + "ArchiveCampaign",
    _PROFILE + "SetConsent", _PROFILE + "DeleteProfile",
    _PROFILE + "AddSuppression", _PROFILE + "RemoveSuppression", _PROFILE + "CheckSuppression",
    _PROFILE + "ExportEvents", _CAMPAIGN + "ExportDecisions", _PROFILE + "ExportProfile",
    _CATALOG + "UpsertItems", _CATALOG + "RemoveItems",
    _MODEL + "ExportImpressions",
    # A mass send, re-sending a failed message, rendering any user's data into a preview.
    _MESSAGING + "SendCampaign", _MESSAGING + "RetryDeadLetter", _MESSAGING + "PreviewMessage",
    _MESSAGING + "CancelSend",
})
"""Methods whose every call goes to the audit log with its final status. Unmasked reads
(GetProfile, UpsertAttributes by a `pii-reader`) are audited too (`interceptor`)."""

UNMASKED_READS = frozenset({_PROFILE + "GetProfile", _PROFILE + "UpsertAttributes"})
UNMASKED_STREAMS = frozenset({_PROFILE + "ExportEvents", _CAMPAIGN + "ExportDecisions",
                              _MODEL + "ExportImpressions"})
"""Reply streams that a `pii-reader` reads unmasked, decided at their start: one whose caller
loses the role ends (`interceptor._Caller`)."""


def default_patterns() -> dict[str, list[str]]:
    """Built-in role → method patterns, derived from `RPC_ROLES` (plus the audit service)."""
    out: dict[str, list[str]] = {}
    for method, roles in RPC_ROLES.items():
        for role in roles:
            if role != ANY_AUTHENTICATED:
                out.setdefault(role, []).append(method)
    out["auditor"] = [AUDIT_PATTERN]
    return out


BUILTIN_ROLES: Mapping[str, tuple[str, ...]] = {r: tuple(p) for r, p in default_patterns().items()}
ROLE_NAMES = frozenset(BUILTIN_ROLES)


class RoleTable:
    """Method → roles allowed to call it, for the built-in roles with `overrides` applied.

    `allowed(method)` is one dict hit after the first call of a method; a method no role names
    gets an empty set (nobody may call it), except pseudo-role entries of `RPC_ROLES`.
    """

    def __init__(self, overrides: Mapping[str, Iterable[str]] | None = None):
        patterns = {**BUILTIN_ROLES, **{r: tuple(p) for r, p in (overrides or {}).items()}}
        self.patterns: dict[str, tuple[str, ...]] = patterns
        self._cache: dict[str, frozenset[str]] = {}

    def allowed(self, method: str) -> frozenset[str]:
        roles = self._cache.get(method)
        if roles is None:
            roles = self._cache[method] = self._resolve(method)
        return roles

    def _resolve(self, method: str) -> frozenset[str]:
        roles = {r for r, pats in self.patterns.items() if any(fnmatchcase(method, p) for p in pats)}
        if ANY_AUTHENTICATED in RPC_ROLES.get(method, ()):
            roles.add(ANY_AUTHENTICATED)
        return frozenset(roles)
