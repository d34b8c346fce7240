"""TLS contexts for host-to-host traffic: both ends present the host certificate and trust the site CA."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from standby.domain.errors import FileNotFound, InvalidParameter


@dataclass(frozen=True, slots=True)
class PeerTls:
    """The files of mutual TLS: the site CA to trust and this host's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """Verify the server against the CA (and its name), present the host certificate."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._load(context)
        return context

    def server_context(self) -> ssl.SSLContext:
        """Require a client certificate signed by the CA; present the host certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_REQUIRED
        self._load(context)
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        for path in (self.ca_file, self.cert_file, self.key_file):
            if not path.is_file():
                raise FileNotFound(f"TLS file {path} does not exist", message_id="TlsFileMissing",
                                   path=str(path))
        try:
            context.load_verify_locations(cafile=str(self.ca_file))
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise InvalidParameter(f"cannot load the TLS files ({self.cert_file}, {self.ca_file}): {exc}",
                                   message_id="TlsFilesUnusable", path=str(self.cert_file)) from None
