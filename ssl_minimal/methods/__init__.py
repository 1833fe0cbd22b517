"""One file per method, in the order of the course. `METHODS` maps the lower-case name to the class."""

from .instdisc import InstDisc
from .barlow_twins import BarlowTwins
from .byol import BYOL
from .invaspread import InvaSpread
from .simsiam import SimSiam
from .swav import SwAV

METHODS = {
    "instdisc": InstDisc,
    "invaspread": InvaSpread,
    "swav": SwAV,
    "byol": BYOL,
    "simsiam": SimSiam,
    "barlow_twins": BarlowTwins,
}
