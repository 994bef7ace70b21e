#!/usr/bin/env bash
# Make a headless browser available for the docs/viewer browser test (tests/test_docs_browser.py).
# Debian/Ubuntu as root: installs Debian's `chromium` package; with sudo: the same through sudo.
# GitHub's Ubuntu runners already ship Google Chrome, which the test also accepts.
set -u
for b in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$b" >/dev/null 2>&1; then echo "browser: $(command -v "$b")"; exit 0; fi
done
SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
  echo "installing Debian's chromium package for the browser test"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
    && { echo "browser: $(command -v chromium)"; exit 0; }
fi
echo "WARNING: no Chromium/Chrome found and none could be installed; the browser test will be skipped outside CI" >&2
exit 0
