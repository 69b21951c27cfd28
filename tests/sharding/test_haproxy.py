"""HAProxy computes the same slot as the servers, and accepts the configs we render."""

from __future__ import annotations

import http.client
import random
import string

from service.sharding.haproxy import SLOT_EXPRESSION, render_config, render_map
from service.sharding.slot_table import SlotTable
from service.sharding.slots import slot_of
from tests.server_process import free_port
from tests.sharding.haproxy_process import HaproxyProcess, check_config

NAME_ALPHABET = string.ascii_lowercase + string.digits + "_-"


def _names(count: int) -> list[str]:
    rng = random.Random(16)
    names = {"default", "a", "sensor-7", "x" * 63}
    while len(names) < count:
        first = rng.choice(string.ascii_lowercase + string.digits)
        names.add(first + "".join(rng.choices(NAME_ALPHABET, k=rng.randrange(0, 40))))
    return sorted(names)


def test_haproxy_crc32_mod_1024_agrees_with_the_servers_slot(tmp_path):
    port = free_port()
    config = "\n".join([
        "global", "    maxconn 100", "defaults", "    mode http", "    timeout connect 5s",
        "    timeout client 30s", "    timeout server 30s", "frontend slots",
        f"    bind 127.0.0.1:{port}",
        "    http-request return status 200 content-type text/plain "
        f'lf-string "%[{SLOT_EXPRESSION}]"',
        "",
    ])
    names = _names(3000)
    with HaproxyProcess(tmp_path, config, port) as router:
        connection = http.client.HTTPConnection("127.0.0.1", router.port, timeout=30)
        answered = {}
        for name in names:
            connection.request("GET", "/", headers={"x-hebbian-model": name})
            answered[name] = int(connection.getresponse().read())
        connection.close()
    assert answered == {name: slot_of(name) for name in names}


def test_rendered_router_config_is_valid_for_haproxy(tmp_path):
    (tmp_path / "slots.map").write_text(render_map(SlotTable.even(3)))
    for dns in (False, True):
        config = render_config(
            {i: f"hebbian-{i}.hebbian-headless.hebbian.svc.cluster.local:50051" if dns
             else f"127.0.0.1:{5000 + i}" for i in range(3)},
            map_file=str(tmp_path / "slots.map"), dns=dns, stats_bind=":8404",
        )
        path = tmp_path / f"haproxy-{dns}.cfg"
        path.write_text(config)
        checked = check_config(path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "proto h2" in config and "crc32,mod(1024)" in config


def test_the_map_has_one_line_per_slot_naming_its_shards_backend():
    table = SlotTable.parse("ranges: [{slots: 0-9, shard: 1}, {slots: 10-1023, shard: 0}]")
    lines = render_map(table).splitlines()[1:]
    assert len(lines) == 1024
    assert lines[0] == "0 shard-1" and lines[9] == "9 shard-1" and lines[10] == "10 shard-0"
