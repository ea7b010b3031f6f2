"""Settings for every churnwatch process: defaults, a TOML file, `CHURNWATCH_*` variables."""

from config.settings import EventLimits, RuleSettings, Settings, TopicSettings, load_settings

__all__ = ["EventLimits", "RuleSettings", "Settings", "TopicSettings", "load_settings"]
