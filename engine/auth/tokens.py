"""Signed device tokens: HMAC-SHA256 over a compact JSON claims payload, keys kept in the data dir.

Format: ``rs1.<kid>.<payload>.<signature>`` where ``payload`` is the base64url (unpadded) compact JSON of
the claims and ``signature`` is base64url HMAC-SHA256(key[kid], "rs1.<kid>.<payload>"). The key id is part
of the signed text, so a token cannot be re-pointed at another key. Keys rotate by kid: ``rotate`` adds a
new current key and old keys keep verifying until retired, so issued tokens survive a rotation.

Both the hub (engine/live) and the sync endpoint authenticate the WebSocket upgrade with
``token_from_request`` + ``KeyRing.verify`` and then ask the claims about scope (``require_*``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import ids
from engine.ids import InvalidId
from engine.roles import Role as Role  # noqa: PLC0414 (the one Role, re-exported)

# Device, class, ride and key ids: one grammar (engine/ids.py) for tokens, the ride schema and every route,
# so an id that gets a token is an id the rest of ridesync accepts. Also importable from here.
valid_id = ids.valid_id

VERSION = "rs1"
KEY_FILE = "token-keys.json"
# Small clock differences between devices must not reject a fresh token.
CLOCK_LEEWAY_S = 30.0
MAX_TOKEN_LEN = 4096


class TokenError(Exception):
    """Base of every token failure. `code` is a stable machine-readable name for clients and logs."""

    code = "token_invalid"


class TokenMissing(TokenError):
    code = "token_missing"


class TokenMalformed(TokenError):
    code = "token_malformed"


class TokenBadSignature(TokenError):
    code = "token_bad_signature"


class TokenUnknownKey(TokenError):
    code = "token_unknown_key"


class TokenExpired(TokenError):
    code = "token_expired"


class TokenNotYetValid(TokenError):
    code = "token_not_yet_valid"


class TokenScopeError(TokenError):
    """The token is valid but does not allow this action (role, class, ride or device)."""

    code = "token_wrong_scope"


class KeyFileError(TokenError):
    """The data dir's key file cannot be read or written; the message names the file."""

    code = "token_keys_unreadable"


class KeyFileDamaged(KeyFileError):
    """The key file exists but does not hold the keys ridesync writes (garbage, truncated, edited)."""

    code = "token_keys_damaged"


class KeysMissing(KeyFileError):
    """The data dir has no key file. Creating one is an explicit step (`KeyRing.create`, `--init`): new
    keys invalidate every token issued with the old ones, so a wrong or emptied data dir must not get
    them silently."""

    code = "token_keys_missing"


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not _B64_RE.fullmatch(text):
        raise TokenMalformed("token part is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenMalformed("token part is not base64url") from exc


_B64_RE = re.compile(r"[A-Za-z0-9\-_]+")


def valid_name(value: object) -> bool:
    """A rider's display name: 1..64 printable characters (it is shown as text, never as HTML)."""
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable() and value.strip() == value


MAX_HR_RANGE = (100, 250)


def valid_max_hr(value: object) -> bool:
    return (
        isinstance(value, int) and not isinstance(value, bool) and MAX_HR_RANGE[0] <= value <= MAX_HR_RANGE[1]
    )


@dataclass(frozen=True, slots=True)
class Claims:
    role: Role
    device: str
    classes: frozenset[str]
    rides: frozenset[str] | None  # None: any ride the role may touch
    iat: float
    exp: float
    kid: str = ""
    # Who rides with this device: a bike's and an app's tokens with the same rider let the app write the
    # rides that bike owns (engine/backend/README.md, "Ride owners").
    rider: str | None = None
    # Who the rider is on the class page: a display name and a max heart rate for the zones. Publishers may
    # override both in their hello (engine/live/README.md).
    name: str | None = None
    max_hr: int | None = None

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "r": self.role.value,
            "d": self.device,
            "c": sorted(self.classes),
            "iat": int(self.iat),
            "exp": int(self.exp),
        }
        if self.rides is not None:
            out["rd"] = sorted(self.rides)
        if self.rider is not None:
            out["rider"] = self.rider
        if self.name is not None:
            out["name"] = self.name
        if self.max_hr is not None:
            out["max_hr"] = self.max_hr
        return out

    @classmethod
    def from_payload(cls, obj: object, kid: str) -> Claims:
        if not isinstance(obj, dict):
            raise TokenMalformed("claims are not an object")
        try:
            role = Role(obj["r"])
        except (KeyError, ValueError, TypeError) as exc:
            raise TokenMalformed("claims carry no valid role") from exc
        device = obj.get("d")
        if not valid_id(device):
            raise TokenMalformed("claims carry no valid device id")
        classes = obj.get("c", [])
        rides = obj.get("rd")
        if not isinstance(classes, list) or not all(valid_id(c) for c in classes):
            raise TokenMalformed("claims carry invalid classes")
        if rides is not None and (not isinstance(rides, list) or not all(valid_id(r) for r in rides)):
            raise TokenMalformed("claims carry invalid rides")
        rider = obj.get("rider")
        if rider is not None and not valid_id(rider):
            raise TokenMalformed("claims carry an invalid rider")
        name = obj.get("name")
        if name is not None and not valid_name(name):
            raise TokenMalformed("claims carry an invalid name")
        max_hr = obj.get("max_hr")
        if max_hr is not None and not valid_max_hr(max_hr):
            raise TokenMalformed("claims carry an invalid max_hr")
        iat, exp = obj.get("iat"), obj.get("exp")
        if not _is_number(iat) or not _is_number(exp):
            raise TokenMalformed("claims carry no valid iat/exp")
        assert isinstance(device, str)
        return cls(
            role=role,
            device=device,
            classes=frozenset(classes),
            rides=None if rides is None else frozenset(rides),
            iat=float(iat),  # type: ignore[arg-type]
            exp=float(exp),  # type: ignore[arg-type]
            kid=kid,
            rider=rider,
            name=name,
            max_hr=max_hr,
        )

    # Scope checks raise TokenScopeError with a reason a client can show.
    def require_subscribe(self, class_id: str) -> None:
        if class_id not in self.classes:
            raise TokenScopeError(f"token does not allow class {class_id!r}")

    def require_publish(self, class_id: str, device: str | None = None) -> None:
        if self.role not in (Role.BIKE, Role.APP):
            raise TokenScopeError(f"role {self.role.value!r} may not publish")
        self.require_subscribe(class_id)
        if device is not None and device != self.device:
            raise TokenScopeError(f"token for device {self.device!r} may not publish for {device!r}")

    def require_ride(self, ride_id: str) -> None:
        if self.rides is not None and ride_id not in self.rides:
            raise TokenScopeError(f"token does not allow ride {ride_id!r}")


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and abs(v) < 1e12


@dataclass
class KeyRing:
    """HMAC keys by key id; `current` signs, every key present verifies."""

    keys: dict[str, bytes] = field(default_factory=dict)
    current: str = ""
    path: Path | None = None

    @classmethod
    def generate(cls) -> KeyRing:
        ring = cls()
        ring.rotate()
        return ring

    @classmethod
    def load(cls, data_dir: str | os.PathLike[str]) -> KeyRing:
        """The data dir's keys. KeysMissing if it has none, KeyFileError if they cannot be read."""
        path = Path(data_dir) / KEY_FILE
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            raise KeysMissing(f"{path} does not exist") from None
        except OSError as exc:
            raise KeyFileError(f"cannot read signing keys {path}: {exc.strerror or exc}") from None
        try:
            obj = json.loads(body.decode("utf-8"))
            keys = {kid: bytes.fromhex(hexkey) for kid, hexkey in obj["keys"].items()}
            current = obj["current"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc)
            raise KeyFileDamaged(f"signing key file {path} is damaged ({detail})") from None
        if (
            not isinstance(current, str)
            or current not in keys
            or not all(valid_id(k) and len(v) >= 32 for k, v in keys.items())
        ):
            raise KeyFileDamaged(f"signing key file {path} is damaged (inconsistent keys)")
        return cls(keys=keys, current=current, path=path)

    @classmethod
    def create(cls, data_dir: str | os.PathLike[str]) -> KeyRing:
        """A new key file (mode 0600, one fresh key) in the data dir, made if needed. KeyFileError if the
        dir already has one: keys are never replaced behind the tokens they signed."""
        directory = Path(data_dir)
        path = directory / KEY_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(path):
                raise KeyFileError(f"{path} already exists; not replacing signing keys")
            ring = cls.generate()
            ring.path = path
            ring.save()
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
            raise KeyFileError(f"cannot create signing keys {path}{where}: {exc.strerror or exc}") from None
        return ring

    @classmethod
    def load_or_create(cls, data_dir: str | os.PathLike[str]) -> KeyRing:
        """The data dir's keys, created (mode 0600, one fresh key) when it has none: for callers that
        set up a new data dir on purpose (tests, the demo, benchmarks, `--init`)."""
        try:
            return cls.load(data_dir)
        except KeysMissing:
            return cls.create(data_dir)

    def exposed(self) -> int | None:
        """The key file's permission bits if users other than its owner may use it (mode & 0o077), else
        None. Anyone who can read the file can sign tokens for any device."""
        if self.path is None:
            return None
        try:
            mode = stat.S_IMODE(self.path.stat().st_mode)
        except OSError:
            return None
        return mode if mode & 0o077 else None

    def save(self) -> None:
        if self.path is None:
            return
        body = json.dumps({"current": self.current, "keys": {k: v.hex() for k, v in self.keys.items()}})
        tmp = self.path.with_suffix(".tmp")
        # Create with 0600 from the start: the key must never be readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        # The rename is durable only once the directory is: keys lost to a power cut orphan every token.
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def rotate(self) -> str:
        kid = "k" + secrets.token_hex(4)
        self.keys[kid] = secrets.token_bytes(32)
        self.current = kid
        self.save()
        return kid

    def retire(self, kid: str) -> None:
        if kid == self.current:
            raise TokenError("cannot retire the current key; rotate first")
        self.keys.pop(kid, None)
        self.save()

    def issue(
        self,
        role: Role | str,
        device: str,
        *,
        classes: Iterable[str] = (),
        rides: Iterable[str] | None = None,
        ttl_s: float = 86400.0,
        now: float | None = None,
        rider: str | None = None,
        name: str | None = None,
        max_hr: int | None = None,
    ) -> str:
        t = time.time() if now is None else now
        claims = Claims(
            role=Role(role),
            device=device,
            classes=frozenset(classes),
            rides=None if rides is None else frozenset(rides),
            iat=t,
            exp=t + ttl_s,
            kid=self.current,
            rider=rider,
            name=name,
            max_hr=max_hr,
        )
        try:
            ids.check_device_id(device)
            for class_id in claims.classes:
                ids.check_class_id(class_id)
            for ride_id in claims.rides or ():
                ids.check_ride_id(ride_id)
            if rider is not None:
                ids.check_id(rider, "rider")
        except InvalidId as exc:
            raise TokenMalformed(str(exc)) from None
        if name is not None and not valid_name(name):
            raise TokenMalformed(f"invalid name {name!r}: 1..64 printable characters")
        if max_hr is not None and not valid_max_hr(max_hr):
            lo, hi = MAX_HR_RANGE
            raise TokenMalformed(f"invalid max HR {max_hr!r}: an integer {lo}..{hi}")
        if ttl_s <= 0:
            raise TokenMalformed("ttl must be positive")
        payload = _b64e(json.dumps(claims.to_payload(), separators=(",", ":")).encode())
        signed = f"{VERSION}.{self.current}.{payload}"
        return f"{signed}.{_b64e(self._sign(self.current, signed))}"

    def _sign(self, kid: str, signed: str) -> bytes:
        return hmac.new(self.keys[kid], signed.encode("ascii"), hashlib.sha256).digest()

    def verify(self, token: str | None, now: float | None = None) -> Claims:
        if not token:
            raise TokenMissing("no token")
        if len(token) > MAX_TOKEN_LEN or not token.isascii():
            raise TokenMalformed("token too long or not ASCII")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise TokenMalformed("token is not rs1.<kid>.<payload>.<sig>")
        _, kid, payload, sig = parts
        if kid not in self.keys:
            raise TokenUnknownKey(f"unknown key id {kid!r}")
        expected = self._sign(kid, f"{VERSION}.{kid}.{payload}")
        if not hmac.compare_digest(expected, _b64d(sig)):
            raise TokenBadSignature("token signature does not match")
        try:
            obj = json.loads(_b64d(payload))
        except (ValueError, UnicodeDecodeError) as exc:
            raise TokenMalformed("token payload is not JSON") from exc
        claims = Claims.from_payload(obj, kid)
        t = time.time() if now is None else now
        if t >= claims.exp + CLOCK_LEEWAY_S:
            raise TokenExpired("token expired")
        if claims.iat > t + CLOCK_LEEWAY_S:
            raise TokenNotYetValid("token issued in the future")
        return claims


def token_from_request(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The bearer token of a WebSocket upgrade: `Authorization: Bearer T`, else the `token` query parameter
    (browsers cannot set headers on a WebSocket)."""
    auth = headers.get("Authorization", "")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    token = query.get("token")
    return token or None
