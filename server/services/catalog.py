"""tailor.v1.CatalogService: items that arrive or leave between trainings (`server.catalog`)."""
from __future__ import annotations

from protos.tailor.v1 import catalog_pb2 as pb
from protos.tailor.v1 import catalog_pb2_grpc as pb_grpc

from ..catalog import Catalog, CatalogChange, CatalogItem
from ..errors import grpc_errors

__all__ = ["CatalogConverter", "CatalogServicer"]


class CatalogConverter:
    @staticmethod
    def to_items(req: pb.UpsertItemsRequest) -> list[CatalogItem]:
        return [CatalogItem(item_id=i.item_id, title=i.title, category=i.category, price=i.price,
                            url=i.url, image=i.image) for i in req.items]

    @staticmethod
    def from_change(change: CatalogChange) -> pb.CatalogChange:
        return pb.CatalogChange(accepted=change.accepted, sequence=change.sequence,
                                model_version=change.model_version, new_items=change.new_items)


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    @grpc_errors
    async def UpsertItems(self, request: pb.UpsertItemsRequest, context) -> pb.CatalogChange:
        self.catalog.check_batch("items", len(request.items))
        change = await self.catalog.upsert(CatalogConverter.to_items(request))
        return CatalogConverter.from_change(change)

    @grpc_errors
    async def RemoveItems(self, request: pb.RemoveItemsRequest, context) -> pb.CatalogChange:
        self.catalog.check_batch("item_ids", len(request.item_ids))
        change = await self.catalog.remove(list(request.item_ids))
        return CatalogConverter.from_change(change)
