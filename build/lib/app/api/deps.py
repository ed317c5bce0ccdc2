"""FastAPI dependencies: the instance context and a database session per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import AppContext


async def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


async def get_session(context: Context) -> AsyncIterator[AsyncSession]:
    """A session for the request; routes commit explicitly (a 2xx means committed)."""
    async with context.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]
