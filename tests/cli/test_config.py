"""`cmn config check` as a user runs it: no broker, every finding on stderr, exit 0, 1 (--strict) or 2."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_commands import cmn

CLEAN = {"AMQP_URL": "amqp://guest:guest@127.0.0.1:1/", "KAFKA_BOOTSTRAP_SERVERS": ""}  # unreachable: not asked


async def test_a_clean_file_exits_0_without_reaching_the_broker(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    path.write_text("upstreams:\n  p:\n    endpoints: [https://p.example.com]\n")
    code, _, err = await cmn("config", "check", "--upstreams", str(path), env=CLEAN)
    assert code == 0 and "0 error(s), 0 warning(s)" in err


async def test_errors_exit_2_and_warnings_exit_1_only_when_strict(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams:\n  p:\n    endpoints: [https://p.example.com]\n    brekaer: {}\n")
    code, _, err = await cmn("config", "check", "--upstreams", str(bad), env=CLEAN)
    assert code == 2 and "upstreams.p.brekaer: unknown key (did you mean 'breaker'?)" in err
    empty = tmp_path / "empty.yaml"
    empty.write_text("upstreams: {}\n")
    code, _, err = await cmn("config", "check", "--upstreams", str(empty), env=CLEAN)
    assert code == 0 and "warning: upstreams: empty" in err
    code, _, _ = await cmn("config", "check", "--strict", "--upstreams", str(empty), env=CLEAN)
    assert code == 1


REPO = Path(__file__).resolve().parents[2]
EXAMPLES = (REPO / "deploy" / "upstreams.example.yaml", REPO / "deploy" / "k8s" / "upstreams.yaml")


async def test_the_examples_pass_the_check() -> None:
    for example in EXAMPLES:
        code, _, err = await cmn("config", "check", "--upstreams", str(example), env=CLEAN)
        assert code == 0, err
