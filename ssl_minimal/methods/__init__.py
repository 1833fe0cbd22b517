"""One file per method, in the order of the course. `METHODS` maps the lower-case name to the class."""

from .barlow_twins import BarlowTwins
from .byol import BYOL
from .clip import CLIP
from .cmc import CMC
from .cpc import CPC
from .dino import DINO
from .instdisc import InstDisc
from .invaspread import InvaSpread
from .mae import MAE
from .moco import MoCoV1, MoCoV2
from .moco_v3 import MoCoV3
from .simclr import SimCLR
from .simclr_v2 import SimCLRv2
from .simsiam import SimSiam
from .swav import SwAV

METHODS = {
    "instdisc": InstDisc,
    "invaspread": InvaSpread,
    "cpc": CPC,
    "cmc": CMC,
    "moco_v1": MoCoV1,
    "moco_v2": MoCoV2,
    "simclr_v1": SimCLR,
    "simclr_v2": SimCLRv2,
    "swav": SwAV,
    "byol": BYOL,
    "simsiam": SimSiam,
    "barlow_twins": BarlowTwins,
    "moco_v3": MoCoV3,
    "dino": DINO,
    "clip": CLIP,
    "mae": MAE,
}
