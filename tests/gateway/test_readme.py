"""Every example in the README runs."""

import re
import subprocess
import sys

from harness import REPO


def readme_blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_readme_opens_with_the_two_commands():
    first = readme_blocks("bash")[0]
    assert "cargo run --release -p switchyard -- gateway --config examples/quickstart" in first
    assert "scripts/test.sh" in first


def test_readme_curl(quickstart):
    curl = next(b for b in readme_blocks("bash") if b.startswith("curl"))
    curl = curl.replace("http://127.0.0.1:8080", quickstart.url)
    out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, check=True).stdout
    assert '"content":"Hello! You said: Hello!"' in out


def test_readme_python_matches_client_py_and_runs(quickstart):
    python = readme_blocks("python")[0]
    client = (REPO / "examples" / "quickstart" / "client.py").read_text()
    for line in python.strip().splitlines():
        if line.startswith("client = OpenAI("):
            continue  # client.py takes the base URL as an argument
        assert line in client, f"README line missing from client.py: {line!r}"
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart" / "client.py"), quickstart.url + "/v1"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out == "Hello! You said: Hello!\nHello! You said: Stream this\n"
