"""Who may use the server: the bearer token, or a signed session from the sign-in form.

Programs send `Authorization: Bearer TOKEN`. A browser cannot add that header to the live
page, its EventSource or its MJPEG <img>, so it trades the token once, through the sign-in
form (POST /signin) or the live page's first visit (`/?token=`), for a session cookie. The
cookie holds no token: it is `EXPIRY.NONCE.SIGNATURE`, an HMAC-SHA256 under a key derived
from the token, so it lapses after `server.session_ttl_s` and every session ends when the
token changes. It is HttpOnly, SameSite=Strict and, when the request came over https (also
through a trusted proxy's X-Forwarded-Proto), Secure. No other route reads `?token=`. A
cookie of any other shape (an expiry of thousands of digits or with a minus sign, a field
too many) is not a session, signed or not.

    auth = Auth("a-long-random-token", session_ttl_s=3600)
    auth.session_ok(auth.issue())   # True for an hour
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from importlib import resources
from string import Template

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from . import body
from .errors import Unauthorized

SESSION_COOKIE = "edge_runtime_session"
SIGNIN_FORM_LIMIT = 4096
# What issue() writes: seconds since the epoch, token_urlsafe's letters, a SHA-256 hex digest.
SESSION_SHAPE = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{1,64})\.([0-9a-f]{64})")
# Where the sign-in form may send the browser afterwards (never an address from outside).
SIGNIN_TARGETS = ("/", "/docs", "/redoc", "/view/events", "/view/label")
router = APIRouter(include_in_schema=False)


class Auth:
    def __init__(self, token: str | None, session_ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self.token, self.session_ttl_s, self.clock = token, session_ttl_s, clock
        self._key = hmac.new(token.encode(), b"edge-runtime session v1", hashlib.sha256).digest() if token else b""

    @property
    def required(self) -> bool:
        return self.token is not None

    def token_ok(self, supplied: str | None) -> bool:
        """The one comparison of a supplied token with ours: exact and in constant time (an
        empty one, a prefix, or one with blanks around it is not ours); any is fine when the
        server has no token."""
        if self.token is None:
            return True
        return bool(supplied) and hmac.compare_digest(str(supplied).encode(), self.token.encode())

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        payload = f"{int(self.clock()) + self.session_ttl_s}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def session_ok(self, value: str | None) -> bool:
        if not value or self.token is None:
            return False
        shape = SESSION_SHAPE.fullmatch(value)
        if shape is None:
            return False
        expires, nonce, signature = shape.groups()
        if not hmac.compare_digest(signature, self._sign(f"{expires}.{nonce}")):
            return False
        now = self.clock()
        return now < int(expires) <= now + self.session_ttl_s  # never longer than a session lasts

    def bearer_ok(self, request: Request) -> bool:
        supplied = bearer_token(request)
        return supplied is not None and self.token_ok(supplied)

    def authenticated(self, request: Request) -> bool:
        return not self.required or self.bearer_ok(request) or self.session_ok(request.cookies.get(SESSION_COOKIE))

    def start_session(self, response: Response, request: Request) -> None:
        response.set_cookie(SESSION_COOKIE, self.issue(), max_age=self.session_ttl_s, path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")


def bearer_token(request: Request) -> str | None:
    """The token in `Authorization: Bearer ...`, if any (no other place carries a raw token)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def auth_of(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


PREDICTION_KEY_HEADER = "Prediction-Key"


def require_prediction_key(request: Request) -> None:
    """Dependency for the cloud Prediction API routes: the token as the service's SDKs send
    their key (a `Prediction-Key` header), or as a bearer token. Only then may the route read
    the request's body (server/body.py)."""
    auth = auth_of(request)
    key = request.headers.get(PREDICTION_KEY_HEADER)
    if auth.required and not ((key is not None and auth.token_ok(key)) or auth.bearer_ok(request)):
        raise Unauthorized(f"a valid {PREDICTION_KEY_HEADER} header or bearer token is required")
    body.admit(request)


def require_token(request: Request) -> None:
    """Dependency for every route but /healthz and /readyz: the bearer header or a session.
    Only then may the route read the request's body (server/body.py)."""
    if not auth_of(request).authenticated(request):
        raise Unauthorized("a valid bearer token is required")
    body.admit(request)


def signin_page(target: str, error: str = "", status: int = 401) -> HTMLResponse:
    page = Template(resources.files("edge_runtime.server").joinpath("signin.html").read_text())
    body = page.substitute(next=html.escape(_safe_target(target)), error=html.escape(error))
    return HTMLResponse(body, status_code=status, headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"})


def signed_in(request: Request, target: str) -> RedirectResponse:
    response = RedirectResponse(_safe_target(target), status_code=303)
    auth_of(request).start_session(response, request)
    return response


def _safe_target(target: str) -> str:
    return target if target in SIGNIN_TARGETS else "/"


@router.post("/signin")
async def signin(request: Request) -> Response:
    """The sign-in form's POST: a good token gets a session cookie and goes on to `next`.
    The form carries the token, so its body is read before any token: within its own small cap."""
    body.admit(request)
    form = urllib.parse.parse_qs((await body.read_capped(request, SIGNIN_FORM_LIMIT)).decode("utf-8", "replace"))
    target = form.get("next", ["/"])[0]
    auth = auth_of(request)
    if not auth.required:
        return RedirectResponse(_safe_target(target), status_code=303)
    if not auth.token_ok(form.get("token", [""])[0].strip()):
        return signin_page(target, "That token is not right.")
    return signed_in(request, target)
