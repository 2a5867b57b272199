"""EXIF fields for the payload (capture time, camera, GPS) and the user's ``--after/--before`` dates."""

from __future__ import annotations

import math
import re
import warnings
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from retrieval.errors import ClipdexError

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_MAKE, _MODEL, _DATETIME = 271, 272, 306
_DATETIME_ORIGINAL = 36867
_EXIF_DATE = re.compile(r"\s*(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?")


def _read_exif(img: Image.Image) -> Image.Exif | None:
    """The image's EXIF without decoding pixels (``PngImageFile.getexif`` would load them)."""
    data = img.info.get("exif")
    if isinstance(data, (bytes, bytearray)) and data:
        exif = Image.Exif()
        exif.load(bytes(data))
        return exif
    if hasattr(img, "tag_v2"):  # TIFF keeps its IFD0 in the header
        return img.getexif()
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = " ".join(value.replace("\x00", " ").split())
    return value or None


def _datetime(value: Any) -> datetime | None:
    text = _text(value)
    match = _EXIF_DATE.match(text) if text else None
    if not match:
        return None
    try:
        return datetime(*(int(g or 0) for g in match.groups()))
    except ValueError:  # "0000:00:00 00:00:00" and friends
        return None


def _degrees(value: Any, ref: Any, negative: str, limit: float) -> float | None:
    parts = [float(v) for v in value] if isinstance(value, (tuple, list)) else [float(value)]
    if not 1 <= len(parts) <= 3:
        return None
    deg = sum(p / 60**i for i, p in enumerate(parts))
    if _text(ref) and _text(ref).upper().startswith(negative):  # type: ignore[union-attr]
        deg = -deg
    if not math.isfinite(deg) or abs(deg) > limit:
        return None
    return round(deg, 7)


_ORIENTATION = 0x0112
_SIDEWAYS = (5, 6, 7, 8)  # orientations that turn the picture by 90°: width and height swap


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as the picture is viewed, after its EXIF orientation, read from the header only.

    Malformed EXIF or an unknown orientation leaves the stored size (as ``load_image`` leaves the pixels).
    """
    width, height = img.size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exif = _read_exif(img)
            orientation = exif.get(_ORIENTATION) if exif is not None else None
    except Exception:
        return width, height
    return (height, width) if orientation in _SIDEWAYS else (width, height)


def exif_payload(img: Image.Image) -> dict[str, Any]:
    """``taken_at``, ``taken_ts``, ``camera_make``, ``camera_model``, ``gps_lat``, ``gps_lon``: those present.

    Call it on the image as opened (it does not decode pixels) or on ``load_image``'s result, which keeps
    the EXIF. The EXIF time is taken as UTC for ``taken_ts``. Malformed EXIF never raises: whatever can
    be read is returned.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns "Corrupt EXIF data" once per bad tag
        return _payload(img)


def _payload(img: Image.Image) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        exif = _read_exif(img)
    except Exception:
        return out
    if exif is None:
        return out
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        sub = {}
    try:
        taken = _datetime(sub.get(_DATETIME_ORIGINAL)) or _datetime(exif.get(_DATETIME))
        if taken is not None:
            out["taken_at"] = taken.isoformat()
            out["taken_ts"] = taken.replace(tzinfo=UTC).timestamp()
    except Exception:
        pass
    for key, tag in (("camera_make", _MAKE), ("camera_model", _MODEL)):
        try:
            value = _text(exif.get(tag))
        except Exception:
            value = None
        if value:
            out[key] = value
    try:
        gps = exif.get_ifd(_GPS_IFD)
        lat = _degrees(gps[2], gps.get(1), "S", 90.0)
        lon = _degrees(gps[4], gps.get(3), "W", 180.0)
        if lat is not None and lon is not None:
            out["gps_lat"], out["gps_lon"] = lat, lon
    except Exception:
        pass
    return out


def parse_date(text: str) -> float:
    """``2021``, ``2021-07``, ``2021-07-04`` or an ISO datetime to epoch seconds (start of period; UTC)."""
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}", value):
            moment = datetime(int(value), 1, 1)
        elif re.fullmatch(r"\d{4}-\d{1,2}", value):
            year, month = value.split("-")
            moment = datetime(int(year), int(month), 1)
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?|\d{4}-\d{2}-\d{2}", value):
            moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        else:
            raise ValueError
    except ValueError:
        raise ClipdexError(
            f"invalid date {text!r}: use YYYY, YYYY-MM, YYYY-MM-DD or an ISO datetime like 2021-07-04T18:22"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_optional_date(text: str | None) -> float | None:
    """:func:`parse_date`, passing None (no bound) through."""
    return None if text is None else parse_date(text)
