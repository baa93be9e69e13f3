"""Messages: variant parts as templates, rendered per user into email, SMS and push messages."""
from .channels import MESSAGE_CHANNELS, PARTS, SmsLength, sms_length
from .templates import CONTEXT_NAMES, CompiledCampaign, TemplateCache, check_variants

__all__ = ["MESSAGE_CHANNELS", "PARTS", "SmsLength", "sms_length", "CONTEXT_NAMES",
           "CompiledCampaign", "TemplateCache", "check_variants"]
