"""The subset of TimeTracker's tables the gateway uses, with TimeTracker's names and types."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gateway.timeutil import utcnow_naive

# JSON on TimeTracker's own column (it is `json` there), JSONB where the gateway creates it.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData()


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), nullable=False, unique=True)
    email: Mapped[str | None] = mapped_column(String(200))
    full_name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), nullable=False, default="user")
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    timezone: Mapped[str | None] = mapped_column(String(50))
    github_username: Mapped[str | None] = mapped_column(String(100))
    slack_user_id: Mapped[str | None] = mapped_column(String(50), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow_naive)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, default=utcnow_naive, onupdate=utcnow_naive
    )

    @property
    def display_name(self) -> str:
        return self.full_name or self.username


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow_naive)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, default=utcnow_naive, onupdate=utcnow_naive
    )


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    client_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("clients.id"))
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="active")
    billable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow_naive)
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime, default=utcnow_naive, onupdate=utcnow_naive
    )


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(Integer, ForeignKey("projects.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    # The database default is TimeTracker's legacy 'pending': always write status explicitly.
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    priority: Mapped[str] = mapped_column(String(20), nullable=False, default="medium")
    assigned_to: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.id"))
    created_by: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    external_ref: Mapped[str | None] = mapped_column(String(200), index=True)


class TimeEntry(Base):
    __tablename__ = "time_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"), nullable=False)
    project_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("projects.id"))
    task_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("tasks.id"))
    start_time: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    end_time: Mapped[datetime | None] = mapped_column(DateTime)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    break_seconds: Mapped[int | None] = mapped_column(Integer, default=0)
    notes: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str | None] = mapped_column(String(50))
    billable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    paid: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Integration(Base):
    __tablename__ = "integrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    provider: Mapped[str] = mapped_column(String(50), nullable=False, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.id"), index=True)
    is_global: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    last_sync_at: Mapped[datetime | None] = mapped_column(DateTime)  # naive UTC
    last_sync_status: Mapped[str | None] = mapped_column(String(20))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow_naive)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, default=utcnow_naive, onupdate=utcnow_naive
    )


class AppSettings(Base):
    __tablename__ = "settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    timezone: Mapped[str] = mapped_column(String(50), nullable=False, default="Europe/Rome")
    rounding_minutes: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    token_prefix: Mapped[str] = mapped_column(String(10), nullable=False)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"), nullable=False)
    scopes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow_naive)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


# TimeTracker tables the gateway reads only when they exist; never created by the gateway.
optional_metadata = MetaData()
roles = Table(
    "roles",
    optional_metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
)
user_roles = Table(
    "user_roles",
    optional_metadata,
    Column("user_id", Integer, nullable=False),
    Column("role_id", Integer, nullable=False),
)
user_clients = Table(
    "user_clients",
    optional_metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("client_id", Integer, nullable=False),
)
OPTIONAL_TABLES = ("roles", "user_roles", "user_clients")


class WebhookDelivery(Base):
    """The gateway's own table: delivery ids already handled, so a redelivery does nothing."""

    __tablename__ = "gateway_webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(50), nullable=False)
    delivery_id: Mapped[str] = mapped_column(String(100), nullable=False)
    integration_id: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, default=utcnow_naive, index=True
    )
    __table_args__ = (
        UniqueConstraint("provider", "delivery_id", name="uq_gateway_webhook_delivery"),
    )


class ConnectorState(Base):
    """The gateway's own table: connection facts of an integration (DESIGN §10)."""

    __tablename__ = "gateway_connector_state"

    integration_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_event_at: Mapped[datetime | None] = mapped_column(DateTime)  # naive UTC
    last_event_status: Mapped[str | None] = mapped_column(String(20))
    last_event_detail: Mapped[str | None] = mapped_column(String(500))
    connected_as: Mapped[str | None] = mapped_column(String(200))
    last_checked_at: Mapped[datetime | None] = mapped_column(DateTime)  # naive UTC
    last_check_status: Mapped[str | None] = mapped_column(String(20))
    last_check_error: Mapped[str | None] = mapped_column(String(500))


class TimerEventRow(Base):
    """The gateway's own table: the timer-event outbox (filled by a trigger on PostgreSQL)."""

    __tablename__ = "gateway_timer_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    entry_id: Mapped[int] = mapped_column(Integer, nullable=False)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    available_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)
    done_subscribers: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))


class JobSlot(Base):
    """The gateway's own table: a scheduled job's cron slot, claimed by the replica that runs it."""

    __tablename__ = "gateway_job_slots"

    job: Mapped[str] = mapped_column(String(100), primary_key=True)
    slot: Mapped[datetime] = mapped_column(DateTime, primary_key=True)  # naive UTC
    claimed_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class CalendarLink(Base):
    """The gateway's own table: a Google Calendar event and the time entry it is linked to."""

    __tablename__ = "gateway_calendar_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    integration_id: Mapped[int] = mapped_column(Integer, nullable=False)
    event_id: Mapped[str] = mapped_column(String(1024), nullable=False)
    entry_id: Mapped[int] = mapped_column(Integer, nullable=False)
    direction: Mapped[str] = mapped_column(String(10), nullable=False)  # import, export
    event_updated: Mapped[datetime | None] = mapped_column(DateTime)  # naive UTC
    entry_updated_at: Mapped[datetime | None] = mapped_column(DateTime)  # app wall time
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow_naive)
    __table_args__ = (
        UniqueConstraint("integration_id", "event_id", name="uq_gateway_calendar_link"),
        Index("ix_gateway_calendar_links_entry", "integration_id", "entry_id"),
    )
