"""pgwarden router plugin in Python: routes clients by application_name prefix to a database alias and/or pool
mode, and refuses a list of users. Built into a WebAssembly component by build.sh (componentize-py, world
`router-plugin` of ../../../wit/plugin.wit). See README.md for the configuration keys.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.router import Destination
from wit_world.imports import log
from wit_world.imports.types import Denial, PoolMode, SessionInfo

POOL_MODES = {
    "session": PoolMode.SESSION,
    "transaction": PoolMode.TRANSACTION,
    "statement": PoolMode.STATEMENT,
}
ROUTE_FIELDS = ("prefix", "database", "pool_mode")


@dataclass
class Route:
    number: int
    prefix: str
    database: Optional[str]
    pool_mode: Optional[PoolMode]


@dataclass
class Settings:
    routes: List[Route]
    deny_users: List[str]
    deny_message: str


DEFAULT_DENY_MESSAGE = 'user "{user}" may not connect through pgwarden'

# What init read; None until then.
SETTINGS: Optional[Settings] = None


def parse(config: List[Tuple[str, str]]) -> Settings:
    """The configuration table as settings; raises ValueError naming the key at fault."""
    routes: dict = {}
    deny_users: List[str] = []
    deny_message = DEFAULT_DENY_MESSAGE
    for key, value in config:
        if key == "deny_users":
            deny_users.extend(u.strip() for u in value.split(",") if u.strip())
        elif key == "deny_message":
            if not value.strip():
                raise ValueError("deny_message must not be empty")
            deny_message = value
        elif key.startswith("route."):
            parts = key.split(".")
            if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in ROUTE_FIELDS:
                raise ValueError(
                    f'"{key}": expected route.<N>.prefix, route.<N>.database or route.<N>.pool_mode'
                )
            fields = routes.setdefault(int(parts[1]), {})
            if parts[2] == "pool_mode" and value not in POOL_MODES:
                raise ValueError(f'"{key}": expected session, transaction or statement, got "{value}"')
            fields[parts[2]] = value
        else:
            raise ValueError(
                f'unknown configuration key "{key}" '
                "(expected deny_users, deny_message, route.<N>.prefix, route.<N>.database, route.<N>.pool_mode)"
            )
    parsed = []
    for number in sorted(routes):
        fields = routes[number]
        if "prefix" not in fields:
            raise ValueError(f"route.{number} has no prefix")
        if "database" not in fields and "pool_mode" not in fields:
            raise ValueError(f"route.{number} sets neither database nor pool_mode")
        mode = fields.get("pool_mode")
        parsed.append(
            Route(
                number=number,
                prefix=fields["prefix"],
                database=fields.get("database") or None,
                pool_mode=POOL_MODES[mode] if mode else None,
            )
        )
    return Settings(routes=parsed, deny_users=deny_users, deny_message=deny_message)


class Init(exports.Init):
    def init(self, config: List[Tuple[str, str]]) -> None:
        global SETTINGS
        try:
            settings = parse(config)
        except ValueError as e:
            # The error case of result<_, string>: pgwarden refuses the load with this message.
            raise Err(f"py-router: {e}")
        SETTINGS = settings
        log.log(
            log.Level.INFO,
            f"py-router: {len(settings.routes)} route(s), {len(settings.deny_users)} denied user(s)",
        )


class Router(exports.Router):
    def route(self, session: SessionInfo) -> Destination:
        settings = SETTINGS
        if settings is None:
            raise RuntimeError("py-router: route called before init")
        if session.user in settings.deny_users:
            raise Err(
                Denial(
                    sqlstate="28000",
                    message=settings.deny_message.replace("{user}", session.user),
                    detail=None,
                    hint=None,
                )
            )
        for route in settings.routes:
            if session.application_name.startswith(route.prefix):
                return Destination(database=route.database, pool_mode=route.pool_mode, server_user=None)
        return Destination(database=None, pool_mode=None, server_user=None)
