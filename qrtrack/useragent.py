"""Classify a User-Agent string into a friendly device, OS, browser and a bot flag.

No Flask, and no database but the on-disk cache that ClientInfoCache keeps for one-shot processes. The parsers
(user_agents, crawlerdetect) are imported on first use, because under CGI import time is request time and the
scan redirect does not need them; long-running servers call warm_up() at start.
"""

from __future__ import annotations

import _thread  # its lock without threading, which would make a CGI scan 1.30× as long (bench devices)

from .records import record
from .store.client_info import ClientInfoFile

TYPE_CHECKING = False  # typing's own would make a CGI scan 1.65× as long (bench/run.py devices)
if TYPE_CHECKING:
    from user_agents.parsers import UserAgent

MAX_USER_AGENT_LENGTH = 512
CLASSIFIED_KEPT = 4096

_OTHER = "Other"
_BOT_DEVICE = "Bot"
_WARM_UP_USER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"
)


class ClientInfo(record("ClientInfo", "device os browser is_bot")):
    """What a User-Agent says about the client, as shown on the dashboard: device, os and browser
    names (str) and whether it is a bot (bool)."""

    __slots__ = ()


_UNKNOWN_BOT = ClientInfo(device=_BOT_DEVICE, os=_OTHER, browser=_OTHER, is_bot=True)
_classified: dict[str, ClientInfo] = {}

# CrawlerDetect keeps the last match on the instance, so one instance is shared
# per process and every call through it holds this lock.
_crawler_lock = _thread.allocate_lock()
_crawler_detector = None


def classify_user_agent(user_agent: str | None) -> ClientInfo:
    """Return the ClientInfo for a raw User-Agent header value.

    The value is cut to MAX_USER_AGENT_LENGTH characters first, and results are
    cached per distinct cut string, so the same string returns the same object.
    A missing or blank User-Agent counts as a bot: browsers always send one.
    """
    if user_agent is None:
        return _UNKNOWN_BOT
    return _classify_truncated(user_agent[:MAX_USER_AGENT_LENGTH])


class ClientInfoCache:
    """classify_user_agent through a file that outlives the process (store.client_info), for CGI processes,
    which would otherwise import the parsers for every scan."""

    def __init__(self, path: str):
        self.file = ClientInfoFile(path)

    def classify(self, user_agent: str) -> ClientInfo:
        return ClientInfo(*self.file.find_or_add(user_agent, classify_user_agent))


def warm_up() -> None:
    """Import the parsers and compile their regexes now, not on the first scan."""
    _classify_uncached(_WARM_UP_USER_AGENT)


def _classify_truncated(user_agent: str) -> ClientInfo:
    """Memoised in a dict emptied when it holds CLASSIFIED_KEPT strings: functools.lru_cache would import functools
    and collections into every CGI scan (see records.py), and a User-Agent repeats for a long-running process's life."""
    found = _classified.get(user_agent)
    if found is None:
        found = _UNKNOWN_BOT if not user_agent.strip() else _classify_uncached(user_agent)
        if len(_classified) >= CLASSIFIED_KEPT:
            _classified.clear()
        _classified[user_agent] = found
    return found


def _classify_uncached(user_agent: str) -> ClientInfo:
    from user_agents import parse  # lazy: importing compiles every regex (~130 ms)

    parsed = parse(user_agent)
    is_bot = parsed.is_bot or _is_crawler(user_agent)
    return ClientInfo(
        device=_BOT_DEVICE if is_bot else _device_name(parsed),
        os=_versioned(parsed.os.family, parsed.os.version),
        browser=parsed.browser.family or _OTHER,
        is_bot=is_bot,
    )


def _is_crawler(user_agent: str) -> bool:
    global _crawler_detector
    with _crawler_lock:
        if _crawler_detector is None:
            from crawlerdetect import CrawlerDetect  # lazy, as above

            _crawler_detector = CrawlerDetect()
        return bool(_crawler_detector.is_crawler(user_agent))


def _device_name(parsed: UserAgent) -> str:
    """Map a user_agents result to the few device names the dashboard groups by."""
    os_family = parsed.os.family or ""
    if os_family in ("iOS", "iPadOS"):
        return "iPad" if parsed.is_tablet else "iPhone"
    if os_family == "Android":
        return "Android tablet" if parsed.is_tablet else "Android"
    if parsed.is_mobile or not parsed.is_pc:
        return _OTHER
    if os_family == "Chrome OS":
        return "Chromebook"
    if os_family.startswith("Windows"):
        return "Windows PC"
    if os_family == "Mac OS X":
        return "Mac"
    # user_agents counts any X11 Linux as a PC, whatever the distribution says.
    return "Linux PC" if "Linux" in parsed.ua_string else _OTHER


def _versioned(family: str | None, version: tuple) -> str:
    """Return "Family major.minor", or the bare family when there is no version."""
    family = family or _OTHER
    numbers = [str(part) for part in version[:2] if part not in (None, "")]
    return f"{family} {'.'.join(numbers)}" if numbers else family
