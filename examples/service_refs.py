"""A daemonized worker that offers a service handing out cross-interfaces.

Run:  python examples/service_refs.py

The worker function listens a "bank" service and calls run_in_back, so the
worker lives on after the spawn returns. This program dials the service, gets
references to Account objects that live in the worker, and passes one to a
second worker, which calls the owner directly.
"""

import threading

import pycircuit


class Account:
    def __init__(self, owner: str) -> None:
        self.owner, self.balance = owner, 0
        self._lock = threading.Lock()

    def deposit(self, amount: int) -> int:
        with self._lock:
            self.balance += amount
            return self.balance


class Bank:
    def __init__(self) -> None:
        self._closed = threading.Event()

    def open(self, owner: str) -> pycircuit.X:
        # A new object per call; the worker frees it when every holder drops it.
        return pycircuit.ref(Account(owner))

    def close(self) -> None:
        self._closed.set()


def serve_bank() -> str:
    bank = Bank()
    pycircuit.listen("bank", bank)
    pycircuit.run_in_back(bank._closed.wait)  # keeps the worker alive until close()
    return "bank open"


def pay_in(account: pycircuit.X, times: int) -> int:
    # Runs in another worker: it dials the bank worker directly.
    total = 0
    for _ in range(times):
        total = account.deposit(10)
    return total


def main() -> None:
    with pycircuit.connect() as c:
        host = c.hosts()[0]
        status, bank_addr = pycircuit.spawn(host, ["services"], serve_bank)
        print(status, "at", bank_addr)
        print("listed:", sorted(c.walk([host.id, "services"]).view()))

        bank = pycircuit.dial(bank_addr, "bank")
        acct = bank.open("ada")
        print("account reference:", acct)
        print("balance after 5:", acct.deposit(5))

        total, _ = pycircuit.spawn(host, None, pay_in, acct, 3)
        print("balance after a second worker paid in 3×10:", total)

        try:
            acct.withdraw(1)
        except pycircuit.CircuitError as e:
            print("unknown method:", e)

        bank.close()


if __name__ == "__main__":
    main()
