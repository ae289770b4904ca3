"""Easee charger (Home/Charge) through the Easee cloud API, inside its rate limits.

Device facts (reference ``chargers.md`` §1; sources as keyed there: [E-auth], [E-limits], [E-ref],
[E-enum], [E-amqp] Easee developer docs; [GEN] Easee OpenAPI endpoint descriptions; [P] pyeasee;
[EV] evcc ``charger/easee*``).  Login, tokens, retries and the request budgets are
:mod:`pvcharge.clients.easee`; decoding the observations into a reading is
:mod:`pvcharge.chargers.easee_observations`; the requests a write or a wake-up sends, in their order, and
what the charger holds after each are :mod:`pvcharge.chargers.easee_writes`.

- State: ``GET /state/{chargerId}/observations?ids=…`` (no ``/api`` prefix) →
  ``{"observations": [{"id", "dataType", "value", "timestamp"}]}``; dataType 2 bool, 3 double, 4 int,
  6 string; unknown ids are left out.  The former ``GET /api/chargers/{id}/state`` answers 404 since
  2026-09-01 and is never called (§1.2).  **totalPower (120) is in kW**; currents are in A (§1.2, the
  unit table at the top of chargers.md).
- Current (§1.3): the dynamic charger current command
  ``POST /api/chargers/{id}/commands/set_dynamic_charger_current {"amps": A, "minutes": 0}`` (0 minutes =
  until changed; volatile; "0 pauses" [E-amqp]) [P; E-ref]; the same value as the charger setting
  ``POST /api/chargers/{id}/settings {"dynamicChargerCurrent": A}`` (what evcc sends [EV]; 20/min
  [GEN]); or the circuit dynamic current ``POST /api/sites/{site}/circuits/{circuit}/settings
  {"dynamicCircuitCurrentP1..P3": A}`` — always all three phases, an omitted phase went to 0 [GEN;
  ioBroker.easee#23]; below 6 A pauses, 6 A or more resumes [easee_hass wiki ChargingControl].  The
  charger applies the lowest of its limits [E-limits].
- Pause/resume (§1.4): ``commands/pause_charging`` "limits dynamic charger current to 0";
  ``commands/resume_charging`` **resets the dynamic charger current to the maximum, 32 A** (evcc waits
  for it to read 32 A, then re-sends its setpoint [EV]).  ``start_charging``/``stop_charging`` only
  handle cloud authorization and are never sent.
- 1p/3p (§1.5): with the charger alone on its circuit, P1 = current and P2 = P3 = 0 charges on one phase,
  all three = current on three [EV]; firmware-dependent (pyeasee#35 vs easee_hass#667, unverified).
- An accepted command (200/202) counts as applied: SignalR is not implemented (optional per issue 5);
  the next observations show its effect.

**Never above the command, whatever the cloud answers.**  Each write is one request that takes the
charger straight to the commanded current, so a refused request leaves it where it was, and an
:meth:`EaseeCharger.apply` that raises ``WriteDeferred`` leaves it no higher than the last command it
returned from (after a timeout or another error the command may have arrived in part; the daemon then
counts no command as taken and sends it again):

- ``charger_current``: pause and start by the dynamic charger current alone (0 A pauses); no
  ``resume_charging``, which would run the car at 32 A until a second command got through.
- ``circuit_current``: pause and start by the circuit current (0 A on all phases pauses, and a resume
  cannot lift it); ``resume_charging`` only when the charger's own pause is unknown (first write, after
  :meth:`EaseeCharger.forget`), and always under a circuit that caps the 32 A it sets: first while the
  circuit held is no more than the command (a circuit write refused after it changes nothing), else
  after the circuit write.
- An increase goes out only while its budget keeps a request in reserve for the decrease that may
  follow; a decrease or pause is never held behind it.  A decrease the commands cannot carry now
  (their budget spent, or HTTP 429) goes through the charger setting instead, which Easee limits
  separately; a cloud that refuses that setting (400/404/405) is told once, and decreases then wait for
  the commands (``WriteDeferred`` with the time).

**Waking a car that does not start** (:meth:`EaseeCharger.wake_up`; issue #15: "Easee: pause then
resume"; ``pause_charging``/``resume_charging`` as §1.4 describes them): the charger's own pause command,
then a resume, under the same guarantee:

- ``circuit_current``: ``pause_charging`` then ``resume_charging``; the circuit current the driver holds
  (the command) caps the 32 A the resume sets.
- ``charger_current``: ``pause_charging`` then the resume by ``set_dynamic_charger_current`` with the
  current held before (``resume_charging`` would run the car at 32 A until a second command got through).
- Both commands go only when the command budget carries both now and a decrease can still go right
  after (``charger_current``: by the charger setting; ``circuit_current``: by the circuit settings), and
  not within ``min_write_interval_s`` of the last write; otherwise ``WriteDeferred``.  That a resume
  from ``pause_charging`` wakes a sleeping car as a control-pilot interruption does is the issue's
  reading, not verified on hardware.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import httpx
import structlog

from pvcharge.chargers import Clock
from pvcharge.chargers.easee_observations import parse_observations, reading_from_observations
from pvcharge.chargers.easee_writes import Held, Write, paths_for, plan, total_a, wake_up_writes
from pvcharge.clients.budget import BudgetSpent
from pvcharge.clients.easee import DEFAULT_URL, EaseeClient, IpBlocked
from pvcharge.clients.urls import check_base_url
from pvcharge.errors import (
    DeviceProtocolError,
    DeviceUnavailable,
    RateLimited,
    WriteDeferred,
    WritesBlocked,
)
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading
from pvcharge.settings import Secret, SettingError, setting

_log = structlog.get_logger(__name__)

MIN_CURRENT_A = 6  #: lowest current a car charges at (IEC 61851; chargers.md §1.3 [E-limits])
MAX_CURRENT_A = 32  #: highest dynamic charger current (Easee Home/Charge; evcc waits for 32 A after resume)

_CHARGER_ID = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Config:
    """Settings of one Easee charger (the ``charger:`` section with ``type: easee``).

    ``password`` may be given as ``password_file: PATH`` instead (the config loader reads it).

    Raises:
        SettingError: ``url`` is not ``http(s)://host[:port]`` or holds credentials; ``username`` is empty;
            ``charger_id`` is not alphanumeric; ``phase_switching`` with ``control: charger_current``;
            ``control: circuit_current`` without ``site_id`` or ``circuit_id``; an id below 1.
    """

    username: str = setting(doc="Easee account login: e-mail address or phone number with +country code")
    password: Secret = setting(doc="Easee account password")
    charger_id: str = setting(doc="charger serial number as shown in the Easee app, e.g. EH123456")
    url: str = setting(DEFAULT_URL, doc="base URL of the Easee cloud API")
    control: Literal["charger_current", "circuit_current"] = setting(
        "charger_current",
        doc="charger_current: the charger's dynamic current command; circuit_current: the dynamic current "
        "of its circuit (all three phases; needs site_id and circuit_id)",
    )
    site_id: int | None = setting(None, doc="Easee site id (control: circuit_current only)")
    circuit_id: int | None = setting(None, doc="Easee circuit id (control: circuit_current only)")
    phase_switching: bool = setting(
        False,
        doc="1p/3p via the circuit phase limits when the charger is alone on its circuit (control: "
        "circuit_current only)",
    )
    min_write_interval_s: float = setting(
        30.0,
        doc="minimum time between two writes; a decrease or a pause may go out earlier",
        unit="s",
        min=5,
        max=3600,
    )
    poll_interval_s: float = setting(
        15.0,
        doc="read the charger state from the cloud at most this often; reads in between return the last one",
        unit="s",
        min=15,
        max=600,
    )
    timeout_s: float = setting(10.0, doc="timeout of one HTTP request", unit="s", min=1, max=60)
    retries: int = setting(
        2, doc="extra attempts after a timeout, connection error or HTTP 5xx", min=0, max=5
    )

    def __post_init__(self) -> None:
        check_base_url(self.url, example=DEFAULT_URL, login="username/password")
        if not self.username.strip():
            raise SettingError("username", "must not be empty (e-mail address or +CC phone number)")
        if not _CHARGER_ID.fullmatch(self.charger_id):
            raise SettingError(
                "charger_id",
                f"expected the serial number, letters and digits (e.g. EH123456), got {self.charger_id!r}",
            )
        if self.phase_switching and self.control != "circuit_current":
            raise SettingError(
                "phase_switching",
                "needs control: circuit_current (1p/3p via the circuit phase limits, charger alone on its "
                "circuit)",
            )
        for key in ("site_id", "circuit_id"):
            value = getattr(self, key)
            if value is None and self.control == "circuit_current":
                raise SettingError(
                    key, "required with control: circuit_current (the ids are in the Easee portal)"
                )
            if value is not None and value < 1:
                raise SettingError(key, f"expected a positive id, got {value}")


def create(config: Config, *, name: str, clock: Clock) -> EaseeCharger:
    """Build the driver; no I/O until the first :meth:`EaseeCharger.read` or :meth:`EaseeCharger.apply`."""
    return EaseeCharger(config, name=name, clock=clock)


class EaseeCharger:
    """An Easee charger driven through the Easee cloud (see the module docstring for the protocol).

    Attributes:
        name: the configured device name, used in every error and log line.
        capabilities: whole amps, 0 or 6–32 A; phase switching as configured (circuit_current only).

    Args:
        config: the validated settings.
        name: device name for errors and logs.
        clock: Unix seconds (the daemon's clock): reading timestamps, token expiry, rate budgets.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        config: Config,
        *,
        name: str,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.capabilities = ChargerCapabilities(
            current_step_a=1.0,
            min_current_a=MIN_CURRENT_A,
            max_current_a=MAX_CURRENT_A,
            phase_switching=config.phase_switching,
            on_off_only=False,
        )
        self._config = config
        self._clock = clock
        self._client = EaseeClient(
            name=name,
            base_url=config.url,
            username=config.username,
            password=config.password,
            charger_id=config.charger_id,
            timeout_s=config.timeout_s,
            retries=config.retries,
            clock=clock,
            transport=transport,
        )
        self._held = Held()
        self._setting_refused: str | None = None  # why the dynamicChargerCurrent setting is not used
        self._last_write_s = -math.inf
        self._cached: ChargerReading | None = None
        self._log = _log.bind(device=name)
        self._paths = paths_for(config.charger_id, config.site_id, config.circuit_id)

    def __repr__(self) -> str:
        return (
            f"EaseeCharger({self.name!r}, url={self._client.base_url!r}, "
            f"charger_id={self._config.charger_id!r})"
        )

    # -- public -----------------------------------------------------------------------------------

    async def read(self) -> ChargerReading:
        """Read the charger's observations, at most every ``poll_interval_s``.

        Returns:
            See :func:`reading_from_observations` (power in W from kW, currents in A).  Inside
            ``poll_interval_s`` of the last poll, that poll's reading with its original ``timestamp_s``,
            without a request.

        Raises:
            DeviceUnavailable: no answer after retries (timeout, connection, HTTP 5xx); Easee blocked this
                IP (HTTP 403; nothing is sent any more).
            RateLimited: (a ``DeviceUnavailable``) the state or login budget is spent or Easee answered
                429; nothing is sent for ``retry_after_s``.
            DeviceProtocolError: login refused, access denied, unknown charger (404), malformed reply.
        """
        cached = self._cached
        fresh = cached is not None and self._clock() - cached.timestamp_s < self._config.poll_interval_s
        if self._client.blocked is None and cached is not None and fresh:
            return cached
        where = self._client.where("GET", self._paths.state)
        try:
            response = await self._client.request("state", "GET", self._paths.state)
        except IpBlocked as exc:
            raise DeviceUnavailable(self.name, str(exc)) from exc
        self._client.check(response, where)
        payload = self._client.json(response, where)
        try:
            reading = reading_from_observations(parse_observations(payload), timestamp_s=self._clock())
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{where}: {exc}") from exc
        self._cached = reading
        return reading

    async def apply(self, command: ChargerCommand) -> None:
        """Send what changed of ``command``, each request taking the charger straight to it.

        ``current_a`` is floored to whole amps; 0 pauses.  ``charger_current``: the dynamic charger
        current command (0 A pauses; a decrease the command budget cannot carry now goes as the
        ``dynamicChargerCurrent`` charger setting).  ``circuit_current``: the circuit settings with all
        three phases (P1 = current and P2 = P3 = 0 for ``phases`` 1 with ``phase_switching``, else all
        three = current, 0 A pauses; ``phases`` is ignored without it), then ``resume_charging`` when
        the charger's own pause is unknown.  Nothing is sent for what the charger already holds.  A
        write waits ``min_write_interval_s`` after the previous one unless it lowers the current or
        pauses; an increase also waits until its budget keeps one request in reserve for a decrease.
        Returns only once the charger holds the command (or held it already).

        Raises:
            ValueError: the current is neither 0 nor 6–32 A after flooring (before any I/O).
            WriteDeferred: not sent now (minimum interval, budget spent or held in reserve, or HTTP
                429); ``retry_after_s`` says when it would go.  The charger holds what it held before
                (in ``circuit_current`` possibly the new circuit current, never above the command).
                Offer it again later.
            WritesBlocked: Easee blocked this IP (HTTP 403), now or earlier: nothing is sent any more.
            DeviceUnavailable: no answer after retries.
            DeviceProtocolError: login refused, access denied, 400 with the server's reason, unknown ids.
        """
        amps = math.floor(command.current_a + 1e-9)
        if amps != 0 and not MIN_CURRENT_A <= amps <= MAX_CURRENT_A:
            raise ValueError(
                f"{self.name}: current {command.current_a:g} A is neither 0 nor within "
                f"{MIN_CURRENT_A}–{MAX_CURRENT_A} A"
            )
        if self._client.blocked is not None:
            raise WritesBlocked(self.name, self._client.blocked)
        writes = plan(
            self._held,
            amps,
            command.phases,
            control=self._config.control,
            phase_switching=self._config.phase_switching,
            paths=self._paths,
        )
        if not writes:
            return
        now = self._clock()
        control = self._config.control
        lower = total_a(writes[-1].after, control) < total_a(self._held, control)
        wait_s = self._last_write_s + self._config.min_write_interval_s - now
        if wait_s > 0 and not lower:
            raise WriteDeferred(
                self.name,
                f"{amps} A not sent yet: min_write_interval_s {self._config.min_write_interval_s:g} s since "
                "the last write",
                retry_after_s=wait_s,
            )
        if lower and self._config.control == "charger_current":
            await self._lower_current(amps, writes[0])
            return
        need = Counter(w.budget for w in writes)
        if not lower:  # keep one request for the decrease that may follow
            need[self._decrease_budget] += 1
        wait_s = max(self._client.wait_s(budget, count) for budget, count in need.items())
        if wait_s > 0:
            reserve = "" if lower else ", keeping one request for a decrease"
            raise WriteDeferred(
                self.name, f"{amps} A not sent yet: request budget spent ({', '.join(need)}{reserve})", wait_s
            )
        self._last_write_s = now
        for write in writes:
            await self._send_write(write)
        self._log.debug("easee.applied", current_a=amps, phases=command.phases, requests=len(writes))

    async def wake_up(self) -> None:
        """Wake a car that does not start: the charger's pause, then a resume to the current it held
        (see the module docstring: ``pause_charging``, then ``resume_charging`` under the circuit current
        or ``set_dynamic_charger_current``).  Never above the command held before; a failure leaves the
        charger paused or at that command.

        Raises:
            WriteDeferred: not sent now: the current held is unknown or 0 A (the next apply sends it),
                ``min_write_interval_s`` since the last write, the command budget cannot carry both
                commands, or a decrease could not follow (its budget spent, or the charger setting was
                refused); ``retry_after_s`` says when it may go (0: unknown); nothing was sent.
            RateLimited: (a ``DeviceUnavailable``) HTTP 429 on the resume: the charger is left paused.
            WritesBlocked: Easee blocked this IP (HTTP 403).
            DeviceUnavailable, DeviceProtocolError: as :meth:`apply`; the charger holds 0 A or the
                command, the driver no longer knows which.
        """
        if self._client.blocked is not None:
            raise WritesBlocked(self.name, self._client.blocked)
        held = self._held
        circuit = self._config.control == "circuit_current"
        amps = (max(held.circuit_a) if held.circuit_a is not None else None) if circuit else held.dcc_a
        if not amps:
            raise WriteDeferred(self.name, "no wake-up: the current the charger holds is unknown or 0 A", 0.0)
        now = self._clock()
        waits = {
            "min_write_interval_s": self._last_write_s + self._config.min_write_interval_s - now,
            "command budget": self._client.wait_s("commands", 2),
            "decrease budget": self._client.wait_s("circuit_settings") if circuit else self._setting_wait_s(),
        }
        if (wait_s := max(waits.values())) > 0:
            why = ", ".join(k for k, w in waits.items() if w > 0)
            retry_s = 0.0 if math.isinf(wait_s) else wait_s
            why = f"no wake-up now: {why} (pause and resume take 2 commands)"
            raise WriteDeferred(self.name, why, retry_s)
        self._last_write_s = now
        pause, resume = wake_up_writes(held, amps, control=self._config.control, paths=self._paths)
        await self._send_write(pause)
        try:
            await self._send_write(resume)
        except WriteDeferred as exc:  # HTTP 429 on the resume: the charger is paused, not left as it was
            why = f"wake-up: paused, but the resume was not taken ({exc.message})"
            raise RateLimited(self.name, why, retry_after_s=exc.retry_after_s) from exc
        self._log.debug("easee.woken", current_a=amps, control=self._config.control)

    def forget(self) -> None:
        """Forget the current and pause believed held: the next apply sends them again (Easee clears
        both on plug-in and on reboot)."""
        self._held = Held()

    async def close(self) -> None:
        """Close the HTTP connection pool; tokens and budgets are kept. Safe to call twice."""
        await self._client.close()

    # -- writes -----------------------------------------------------------------------------------

    @property
    def _decrease_budget(self) -> str:
        return "commands" if self._config.control == "charger_current" else "circuit_settings"

    async def _lower_current(self, amps: int, write: Write) -> None:
        """Send a decrease or pause of the dynamic charger current now: by command, or, when the command
        budget cannot carry it (spent, or HTTP 429), by the charger setting."""
        if self._client.wait_s("commands") == 0:
            self._last_write_s = self._clock()
            try:
                await self._send_write(write)
                return
            except WriteDeferred as exc:  # HTTP 429
                if self._setting_wait_s() > 0:
                    raise
                why = exc.message
        elif (wait_s := self._setting_wait_s()) > 0:
            wait_s = min(wait_s, self._client.wait_s("commands"))
            spent = "charger_settings" if self._setting_refused is None else self._refused_setting()
            raise WriteDeferred(
                self.name, f"{amps} A not sent yet: request budget spent (commands, {spent})", wait_s
            )
        else:
            why = "command budget spent"
        self._log.debug("easee.decrease_by_setting", current_a=amps, why=why)
        self._last_write_s = self._clock()
        body = {"dynamicChargerCurrent": amps}
        setting = Write("charger_settings", self._paths.settings, body, write.after)
        refused = await self._send_write(setting, refusal_ok=True)
        if refused is not None:
            self._setting_refused = refused
            self._log.warning(
                "easee.setting_refused",
                request=f"POST {self._paths.settings}",
                server_says=refused,
                action="decreases wait for the command budget from now on",
            )
            raise WriteDeferred(
                self.name,
                f"{amps} A not sent yet: request budget spent (commands, {self._refused_setting()})",
                self._client.wait_s("commands"),
            )

    def _refused_setting(self) -> str:
        return f"and the dynamicChargerCurrent setting was refused ({self._setting_refused})"

    def _setting_wait_s(self) -> float:
        """Seconds until the ``dynamicChargerCurrent`` setting may go; ``inf`` once it was refused."""
        return math.inf if self._setting_refused else self._client.wait_s("charger_settings")

    async def _send_write(self, write: Write, *, refusal_ok: bool = False) -> str | None:
        """Send one request of a write; the charger holds ``write.after`` once it is accepted.

        Returns ``None``, or with ``refusal_ok`` the status and reason of a 400/404/405 (not applied).
        """
        where = self._client.where("POST", write.path)
        try:
            response = await self._client.request(write.budget, "POST", write.path, write.body)
        except BudgetSpent as exc:
            raise WriteDeferred(self.name, exc.message, retry_after_s=exc.retry_after_s) from exc
        except IpBlocked as exc:
            raise WritesBlocked(self.name, str(exc)) from exc
        except BaseException:
            self._held = Held()  # it may have arrived: send everything next time
            raise
        if refusal_ok and response.status_code in (400, 404, 405):
            return f"HTTP {response.status_code}: {self._client.scrub(response.text)}"
        try:
            self._client.check(response, where)
            self._client.check_json(response, where)
        except DeviceProtocolError:
            self._held = Held()
            raise
        self._held = write.after
        self._log.debug("easee.sent", request=where, body=write.body, status=response.status_code)
        return None
