"""Export a permanent reference as bytes and revive it elsewhere.

Run:  python examples/export_import.py

A permanent reference (perm_ref) is never garbage collected, so it can be
written down: export() turns it into bytes that any program in the circuit
can import_() later, together with the exporter's stack at export time.
"""

import threading

import pycircuit


class Registry:
    def __init__(self) -> None:
        self.items: dict[str, str] = {}
        self.done = threading.Event()

    def put(self, key: str, value: str) -> None:
        self.items[key] = value

    def get(self, key: str) -> str:
        return self.items[key]

    def stop(self) -> None:
        self.done.set()


def publish() -> bytes:
    reg = Registry()
    pycircuit.run_in_back(reg.done.wait)
    return pycircuit.export(pycircuit.perm_ref(reg), "registry v1")


def main() -> None:
    with pycircuit.connect() as c:
        host = c.hosts()[0]
        blob, addr = pycircuit.spawn(host, None, publish)
        print(f"exported {len(blob)} bytes from {addr}")

        (reg, label), stack = pycircuit.import_(blob)
        print("imported:", label, reg)
        print("exporter's stack ends with:", stack.strip().splitlines()[-1].strip())
        reg.put("greeting", "hello")
        print("registry says:", reg.get("greeting"))

        try:
            pycircuit.export(pycircuit.ref(Registry()))
        except pycircuit.CircuitError as e:
            print("export of a plain ref refuses:", e)
        reg.stop()


if __name__ == "__main__":
    main()
