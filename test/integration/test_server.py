"""The one-connection server over real TLS on 127.0.0.1, behind
systemd-socket-activate in inetd and fd-3 modes."""

import sys
import unittest

from relaytest import (OP_QUERY, RelayTestCase, T, ENUM, batch_items, exchange, item, request,
                       response_version)


class QueryTest(RelayTestCase):
    def query(self, port):
        with self.connect(port) as s:
            resp = exchange(s, request(OP_QUERY, [item(T["QueryFunction"], ENUM, 1),
                                                  item(T["QueryFunction"], ENUM, 3)]))
        self.assertEqual(response_version(resp), (1, 2))
        (bi,) = batch_items(resp)
        self.assertEqual(bi[T["ResultStatus"]], 0)
        self.assertEqual(bi[T["Operation"]], OP_QUERY)
        return bi

    def test_query_inetd_mode(self):
        self.query(self.start(self.config(), inetd=True))
        self.assertTrue(any('"operation":"Query"' in l for l in self.log_lines(wait_for="connection peer=")))

    def test_query_fd3_mode(self):
        self.query(self.start(self.config(), inetd=False))


if __name__ == "__main__":
    unittest.main(verbosity=2)
