"""The one exception type clipdex raises for problems a user can fix."""


class ClipdexError(Exception):
    """A user-facing error: its message is printed as one line, without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error on a path the user named: what failed, and where."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    name = exc.filename if exc.filename is not None else ""
    where = f": {name!s}" if name != "" else ""
    if exc.filename2 is not None:
        where += f" -> {exc.filename2!s}"
    return f"{reason[:1].lower()}{reason[1:]}{where}"


_LIBRARY_FAMILIES: tuple[tuple[str, str], ...] = (
    # (the exception class's top-level module, what failed in the user's terms)
    ("pyo3_runtime", "the embedded store's engine stopped on damaged store files ({line}); "
                     "`clipdex status --check` finds and sets aside the damaged part"),
    ("onnxruntime", "ONNX Runtime failed: {line} (a damaged or foreign .onnx file? `clipdex model export` "
                    "writes the model's again)"),
    ("rapidocr_onnxruntime", "OCR failed: {line}"),
    ("safetensors", "cannot read model weights: {line}"),
    ("http", "a malformed HTTP answer: {line}"),
    ("qdrant_client", "the Qdrant server: {line}"),
    ("httpx", "cannot talk to the Qdrant server: {line}"),
    ("httpcore", "cannot talk to the Qdrant server: {line}"),
    ("PIL", "cannot read an image: {line}"),
    ("zlib", "damaged compressed data: {line}"),
    ("google", "a damaged model file: {line}"),
    ("onnx", "a damaged ONNX file: {line}"),
)


def library_error_line(exc: BaseException) -> str | None:
    """One line for an exception a library raised about the user's data or surroundings (a damaged store file,
    a broken model file, a malformed network answer, memory), or None when it looks like clipdex's own bug.

    The CLI's last-resort handler asks this before it says "internal error", so every such library (and the
    Rust panics of the store's engine, which are not even ``Exception``) reaches the user as one line.
    """
    if isinstance(exc, MemoryError):
        return "out of memory (a smaller batch_size, fewer workers or a smaller max_megapixels needs less)"
    module = (type(exc).__module__ or "").split(".")[0]
    name = type(exc).__name__
    line = first_line(exc)[:300]
    if name == "PanicException":  # pyo3's, from any Rust extension
        module = "pyo3_runtime"
    for family, template in _LIBRARY_FAMILIES:
        if module == family:
            return template.format(line=line)
    return None
