"""AGS routes under ``/api/lti/courses/{course_id}/line_items``: HTTP only.

Each route reads Rails-like params, runs the authorization ladder with the scopes its action
needs, calls one function of `scores` or `line_items` under the state lock, and shapes the
answer with the IMS media type. Errors are raised as `PlatformError`s and rendered by the app.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.sandbox.authorization import AgsContext, authorize
from app.sandbox.errors import NotFound
from app.sandbox.line_items import (
    FILTERS,
    course_line_item,
    create_line_item,
    delete_line_item,
    list_line_items,
    owned_line_item,
    serialize_line_item,
    serialize_result,
    update_line_item,
)
from app.sandbox.paging import paginate
from app.sandbox.params import bearer_token, read_params
from app.sandbox.protocol import (
    EXT_SUBMISSION,
    MEDIA_LINEITEM,
    MEDIA_LINEITEM_CONTAINER,
    MEDIA_RESULT_CONTAINER,
    MEDIA_SCORE,
    SCOPE_LINEITEM,
    SCOPE_LINEITEM_READONLY,
    SCOPE_RESULT_READONLY,
    SCOPE_SCORE,
)
from app.sandbox.rendering import canvas_json
from app.sandbox.scores import post_score
from app.sandbox.state import SandboxState
from app.sandbox.urls import line_items_url, request_origin, result_url, results_url

READ_LINE_ITEMS = (SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY)
WRITE_LINE_ITEMS = (SCOPE_LINEITEM,)


def build_ags_router(state: SandboxState) -> APIRouter:
    router = APIRouter(prefix="/api/lti/courses/{course_id}", tags=["ags"])

    def ladder(
        request: Request, params: dict[str, Any], course_id: str, scopes: Collection[str]
    ) -> AgsContext:
        token = bearer_token(request, params)
        return authorize(state, request, token=token, course_id=course_id, any_of_scopes=scopes)

    @router.get("/line_items", summary="List this tool's line items")
    async def list_items(request: Request, course_id: str) -> Response:
        params = await read_params(request)
        origin = request_origin(request)
        query = dict(request.query_params)
        include_launch_url = "launch_url" in request.query_params.getlist("include[]")
        with state.lock:
            ctx = ladder(request, params, course_id, READ_LINE_ITEMS)
            filters = {name: str(params[name]) for name in FILTERS if name in params}
            items = list_line_items(state, ctx, filters)
            page, link = paginate(items, line_items_url(origin, course_id), query)
            body = [
                serialize_line_item(state, item, origin, include_launch_url=include_launch_url)
                for item in page
            ]
        return canvas_json(body, media_type=MEDIA_LINEITEM_CONTAINER, headers={"Link": link})

    @router.post("/line_items", summary="Create a line item", status_code=201)
    async def create_item(request: Request, course_id: str) -> Response:
        params = await read_params(request)
        origin = request_origin(request)
        with state.lock:
            ctx = ladder(request, params, course_id, WRITE_LINE_ITEMS)
            body = serialize_line_item(state, create_line_item(state, ctx, params), origin)
        return canvas_json(body, status=201, media_type=MEDIA_LINEITEM)

    @router.get("/line_items/{line_item_id}", summary="Show a line item")
    async def show_item(request: Request, course_id: str, line_item_id: str) -> Response:
        params = await read_params(request)
        origin = request_origin(request)
        include_launch_url = "launch_url" in request.query_params.getlist("include[]")
        with state.lock:
            ctx = ladder(request, params, course_id, READ_LINE_ITEMS)
            item = owned_line_item(state, ctx, line_item_id, showing=True)
            body = serialize_line_item(state, item, origin, include_launch_url=include_launch_url)
        return canvas_json(body, media_type=MEDIA_LINEITEM)

    @router.put("/line_items/{line_item_id}", summary="Update a line item")
    async def update_item(request: Request, course_id: str, line_item_id: str) -> Response:
        params = await read_params(request)
        origin = request_origin(request)
        with state.lock:
            ctx = ladder(request, params, course_id, WRITE_LINE_ITEMS)
            item = update_line_item(state, owned_line_item(state, ctx, line_item_id), params)
            body = serialize_line_item(state, item, origin)
        return canvas_json(body, media_type=MEDIA_LINEITEM)

    @router.delete("/line_items/{line_item_id}", summary="Delete a line item", status_code=204)
    async def delete_item(request: Request, course_id: str, line_item_id: str) -> Response:
        params = await read_params(request)
        with state.lock:
            ctx = ladder(request, params, course_id, WRITE_LINE_ITEMS)
            delete_line_item(state, owned_line_item(state, ctx, line_item_id))
        return Response(status_code=204)

    @router.post("/line_items/{line_item_id}/scores", summary="Post a score")
    async def scores(request: Request, course_id: str, line_item_id: str) -> Response:
        params = await read_params(request)
        origin = request_origin(request)
        with state.lock:
            ctx = ladder(request, params, course_id, (SCOPE_SCORE,))
            outcome = post_score(state, ctx, line_item_id, params)
            url = result_url(origin, course_id, outcome.line_item.id, outcome.result.id)
        progress_base = f"{origin}/api/lti/courses/{course_id}/progress"
        items = [
            {**item, "progress": f"{progress_base}/{outcome.result.id}-{index}"}
            for index, item in enumerate(outcome.file_items, start=1)
        ]
        body = {"resultUrl": url, EXT_SUBMISSION: {"content_items": items}}
        return canvas_json(body, media_type=MEDIA_SCORE)

    @router.get("/line_items/{line_item_id}/results", summary="List results")
    async def list_results(request: Request, course_id: str, line_item_id: str) -> Response:
        params = await read_params(request)
        origin = request_origin(request)
        with state.lock:
            ctx = ladder(request, params, course_id, (SCOPE_RESULT_READONLY,))
            item = course_line_item(state, ctx, line_item_id)
            results = state.results_of(item.id)
            if "user_id" in params:
                student = state.find_student(ctx.course, params["user_id"])
                results = [r for r in results if student is not None and r.user_id == student.id]
            base = results_url(origin, course_id, item.id)
            page, link = paginate(results, base, dict(request.query_params))
            body = [serialize_result(state, item, result, origin) for result in page]
        return canvas_json(body, media_type=MEDIA_RESULT_CONTAINER, headers={"Link": link})

    @router.get("/line_items/{line_item_id}/results/{result_id}", summary="Show a result")
    async def show_result(
        request: Request, course_id: str, line_item_id: str, result_id: str
    ) -> Response:
        params = await read_params(request)
        origin = request_origin(request)
        with state.lock:
            ctx = ladder(request, params, course_id, (SCOPE_RESULT_READONLY,))
            item = owned_line_item(state, ctx, line_item_id)
            result = state.results.get(result_id)
            if result is None or not result.active or result.line_item_id != item.id:
                raise NotFound()
            body = serialize_result(state, item, result, origin)
        return canvas_json(body, media_type=MEDIA_RESULT_CONTAINER)

    return router
