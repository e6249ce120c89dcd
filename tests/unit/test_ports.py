"""Ports for a server: chosen where the kernel hands out no outgoing connection's port, and a
taken one told apart from the configuration's failure in the server's log."""

from __future__ import annotations

import socket
from pathlib import Path

from sweeper.launchers._base import error_lines, free_ports, last_line, port_taken


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_ports("127.0.0.1", 3)
    assert len(set(ports)) == 3
    assert all(1024 < port < low for port in ports), "an outgoing connection never takes these"
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_taken_is_read_from_triton_and_from_the_engine():
    log = 'I1206 23:58:23.05 28518 http_server.cc:4713] "Started"\n'
    log += "E1206 23:58:23.099372 28518 main.cc:257] \"failed to start HTTP service: Unavailable - Socket '127.0.0.1:18123' already in use \"\n"
    assert port_taken(error_lines(log))
    engine = "500 Server Error: driver failed programming external connectivity: Bind for 127.0.0.1:18123 failed: port is already allocated"
    assert port_taken(engine)
    assert not port_taken(error_lines("E1206 23:58:23.1 1 model.cc:1] failed to load 'mlp': no_such_backend\n"))


def test_an_error_line_that_a_stubs_output_ran_into_is_still_read():
    log = "a stub printed this without a newlineE1206 23:58:23.099372 28518 pb_stub.cc:9] Failed to init\n"
    assert error_lines(log) == "Failed to init"


def test_the_last_line_stands_in_where_the_log_has_no_error_line():
    assert last_line("I1206 starting\nsegfault in libfoo at 0x1\n\n") == "segfault in libfoo at 0x1"
    assert last_line("") == ""
    assert len(last_line("x" * 1000)) == 300
