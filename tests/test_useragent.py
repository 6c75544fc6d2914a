"""Tests for qrtrack.useragent: device/OS/browser names and bot detection."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qrtrack import useragent
from qrtrack.useragent import MAX_USER_AGENT_LENGTH, ClientInfo, classify_user_agent, warm_up

REPO_ROOT = Path(__file__).resolve().parent.parent

IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

BROWSERS = [
    pytest.param(
        IPHONE_SAFARI,
        ClientInfo("iPhone", "iOS 18.0", "Mobile Safari", False),
        id="iphone-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Mobile/15E148 Safari/604.1",
        ClientInfo("iPad", "iOS 17.5", "Mobile Safari", False),
        id="ipad-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/130.0.0.0 Mobile Safari/537.36",
        ClientInfo("Android", "Android 10", "Chrome Mobile", False),
        id="android-chrome-reduced-ua",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/129.0.6668.100 Mobile Safari/537.36",
        ClientInfo("Android", "Android 14", "Chrome Mobile", False),
        id="android-chrome-pixel",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/130.0.0.0 Safari/537.36",
        ClientInfo("Android tablet", "Android 14", "Chrome", False),
        id="android-tablet",
    ),
    pytest.param(
        WINDOWS_CHROME,
        ClientInfo("Windows PC", "Windows 10", "Chrome", False),
        id="windows-chrome",
    ),
    pytest.param(
        WINDOWS_CHROME + " Edg/130.0.2849.68",
        ClientInfo("Windows PC", "Windows 10", "Edge", False),
        id="windows-edge",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.0 Safari/605.1.15",
        ClientInfo("Mac", "Mac OS X 10.15", "Safari", False),
        id="mac-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
        ClientInfo("Linux PC", "Linux", "Firefox", False),
        id="linux-firefox",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
        ClientInfo("Linux PC", "Ubuntu", "Firefox", False),
        id="ubuntu-firefox",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/130.0.0.0 Safari/537.36",
        ClientInfo("Chromebook", "Chrome OS 14541.0", "Chrome", False),
        id="chromeos",
    ),
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148 Instagram 346.0.0.22.91 (iPhone15,3; iOS 17_5; en_US; en; scale=3.00; "
        "1290x2796; 630183209)",
        ClientInfo("iPhone", "iOS 17.5", "Instagram", False),
        id="instagram-in-app",
    ),
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.40.109;FBDV/iPhone15,3;FBMD/iPhone;FBSN/iOS;"
        "FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]",
        ClientInfo("iPhone", "iOS 17.5", "Facebook", False),
        id="facebook-in-app",
    ),
]

BOTS = [
    pytest.param(GOOGLEBOT, id="googlebot"),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/130.0.6723.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        id="googlebot-smartphone",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        id="bingbot",
    ),
    pytest.param(
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        id="facebook-preview",
    ),
    pytest.param("WhatsApp/2.23.20.0", id="whatsapp-preview"),
    pytest.param("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", id="slack-preview"),
    pytest.param("Twitterbot/1.0", id="twitterbot"),
    pytest.param("TelegramBot (like TwitterBot)", id="telegrambot"),
    pytest.param(
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        id="discordbot",
    ),
    pytest.param(
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        id="linkedinbot",
    ),
    pytest.param("curl/8.5.0", id="curl"),
    pytest.param("python-requests/2.32.3", id="python-requests"),
]


@pytest.mark.parametrize(("user_agent", "expected"), BROWSERS)
def test_browser_is_classified_by_device_os_and_browser(user_agent, expected):
    assert classify_user_agent(user_agent) == expected


@pytest.mark.parametrize("user_agent", BOTS)
def test_crawlers_link_previews_and_http_clients_are_bots(user_agent):
    info = classify_user_agent(user_agent)

    assert info.is_bot is True
    assert info.device == "Bot"


@pytest.mark.parametrize(
    "user_agent",
    ["", "   ", "\t\n", None],
    ids=["empty", "spaces", "whitespace", "missing"],
)
def test_empty_user_agent_is_a_bot(user_agent):
    assert classify_user_agent(user_agent) == ClientInfo("Bot", "Other", "Other", True)


def test_bot_keeps_the_crawler_name_as_browser():
    assert classify_user_agent(GOOGLEBOT).browser == "Googlebot"


def test_unknown_user_agent_is_other_and_not_a_bot():
    assert classify_user_agent("SomethingNobodyHasSeen/1.0") == ClientInfo("Other", "Other", "Other", False)


def test_same_user_agent_returns_the_cached_object():
    assert classify_user_agent(IPHONE_SAFARI) is classify_user_agent(IPHONE_SAFARI)


def test_the_cache_is_bounded_and_refills(monkeypatch):
    """A flood of distinct User-Agents (bots make them up) must not grow a long-running process without end."""
    monkeypatch.setattr(useragent, "CLASSIFIED_KEPT", 3)
    monkeypatch.setattr(useragent, "_classified", {})
    first = classify_user_agent(IPHONE_SAFARI)
    for number in range(10):
        classify_user_agent(f"made-up-bot/{number}")
        assert len(useragent._classified) <= 3
    again = classify_user_agent(IPHONE_SAFARI)
    assert again == first and classify_user_agent(IPHONE_SAFARI) is again


def test_user_agent_is_truncated_before_classifying():
    padding = " " * MAX_USER_AGENT_LENGTH
    long_browser = WINDOWS_CHROME + padding + "Googlebot/2.1"

    info = classify_user_agent(long_browser)

    assert info == ClientInfo("Windows PC", "Windows 10", "Chrome", False)
    assert info is classify_user_agent(long_browser[:MAX_USER_AGENT_LENGTH])


def test_classification_is_correct_from_many_threads():
    # Unique suffixes defeat the cache, so every call goes through the shared detector.
    jobs = [(f"{GOOGLEBOT} run/{n}", True) if n % 2 else (f"{IPHONE_SAFARI} run/{n}", False) for n in range(200)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: classify_user_agent(job[0]).is_bot, jobs))

    assert results == [expected for _, expected in jobs]


def test_importing_the_module_does_not_load_the_parsers():
    code = (
        "import sys, qrtrack.useragent as u\n"
        "assert 'user_agents' not in sys.modules and 'crawlerdetect' not in sys.modules\n"
        "assert u.classify_user_agent('').is_bot\n"
        "assert 'user_agents' not in sys.modules, 'a blank User-Agent needs no parser'\n"
        "u.warm_up()\n"
        "assert 'user_agents' in sys.modules and 'crawlerdetect' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=REPO_ROOT, check=True)


def test_warm_up_can_be_called_more_than_once():
    warm_up()
    warm_up()

    assert classify_user_agent(IPHONE_SAFARI).device == "iPhone"
