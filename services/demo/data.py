"""Fixed material of the demo county: places, organisations, product templates, name lists.

Every name and number here is invented; province 99 does not exist in the real code table.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.cooperatives.models import CooperativeKind, Linkage
from services.regions.models import SiteKind
from services.users.models import Role

SEED = 20261123

PROVINCE = ("990000000000", "示范省")
CITY = ("990100000000", "示范市")
COUNTY = ("990102000000", "青溪县")
REGION6 = COUNTY[0][:6]
ISSUER = "示范省青溪县乡村振兴局"

TOWNSHIPS = {
    "990102100000": "河田镇",
    "990102200000": "云雾乡",
}


@dataclass(frozen=True, slots=True)
class Village:
    code: str
    name: str
    household_count: int
    rural_population: int
    groups: int
    # A few lineages dominate most villages: most heads carry one of these surnames.
    clans: str

    @property
    def township(self) -> str:
        return TOWNSHIPS[self.code[:9] + "000"]

    @property
    def short(self) -> str:
        return self.name.removesuffix("村")


VILLAGES = (
    Village("990102100001", "上坪村", 420, 1460, 8, "王李陈"),
    Village("990102100002", "下坪村", 380, 1290, 7, "李刘黄"),
    Village("990102100003", "石门村", 310, 1080, 6, "张杨"),
    Village("990102100004", "竹林村", 265, 905, 5, "周吴罗"),
    Village("990102200001", "云岭村", 350, 1230, 7, "杨龙石"),
    Village("990102200002", "茶山村", 298, 1010, 6, "陈田彭"),
    Village("990102200003", "白水村", 236, 815, 5, "赵向谢"),
)
VILLAGE_BY_NAME = {v.name: v for v in VILLAGES}


@dataclass(frozen=True, slots=True)
class Site:
    village: str
    kind: SiteKind
    name: str
    address: str


SITES = (
    Site("上坪村", SiteKind.rural_taobao, "上坪村农村电商服务站", "河田镇上坪村3组村委会旁"),
    Site("下坪村", SiteKind.postal, "下坪村邮政便民服务点", "河田镇下坪村1组小卖部"),
    Site("云岭村", SiteKind.supply_marketing, "云岭村供销社服务点", "云雾乡云岭村2组"),
    Site("茶山村", SiteKind.rural_taobao, "茶山村电商服务站", "云雾乡茶山村4组茶厂对面"),
    Site("白水村", SiteKind.postal, "白水村邮政服务点", "云雾乡白水村1组"),
)


@dataclass(frozen=True, slots=True)
class Organisation:
    # For household shops "{surname}" is filled from the owning household's head.
    name: str
    kind: CooperativeKind
    village: str
    linkages: tuple[Linkage, ...]
    description: str
    templates: tuple[str, ...]
    products: int
    members: tuple[int, int]


ORGANISATIONS = (
    Organisation(
        "青溪县上坪河田鸡养殖专业合作社",
        CooperativeKind.cooperative,
        "上坪村",
        (Linkage.purchase_order, Linkage.dividend),
        "统一供苗、统一防疫、统一收购，林下散养河田鸡，年底按交售量分红。",
        ("河田鸡", "高山土鸡蛋", "土鸭蛋"),
        18,
        (20, 30),
    ),
    Organisation(
        "青溪县茶山云雾茶叶专业合作社",
        CooperativeKind.cooperative,
        "茶山村",
        (Linkage.purchase_order, Linkage.land_lease, Linkage.dividend),
        "流转农户茶园统一管护，鲜叶保底价收购，茶厂用工优先本村脱贫户。",
        ("高山云雾茶", "红茶"),
        16,
        (18, 28),
    ),
    Organisation(
        "青溪县竹林食用菌种植专业合作社",
        CooperativeKind.cooperative,
        "竹林村",
        (Linkage.purchase_order, Linkage.employment),
        "提供菌棒和技术指导，社员分户出菇，合作社统一烘干、分级、销售。",
        ("黑木耳", "香菇", "笋干"),
        16,
        (16, 26),
    ),
    Organisation(
        "青溪县白水果业专业合作社",
        CooperativeKind.cooperative,
        "白水村",
        (Linkage.purchase_order, Linkage.land_lease),
        "脐橙、猕猴桃标准化果园，坡地流转给合作社，农户在园务工。",
        ("脐橙", "猕猴桃", "核桃", "板栗"),
        16,
        (14, 24),
    ),
    Organisation(
        "示范市青溪山货农业开发有限公司",
        CooperativeKind.enterprise,
        "下坪村",
        (Linkage.purchase_order, Linkage.employment),
        "县级农业龙头企业，与全县脱贫户签订收购协议，加工车间吸纳就近就业。",
        ("小米", "红薯粉", "野生蜂蜜", "核桃"),
        14,
        (12, 18),
    ),
    Organisation(
        "青溪县云岭竹编工艺品有限公司",
        CooperativeKind.enterprise,
        "云岭村",
        (Linkage.employment, Linkage.purchase_order),
        "传统竹编技艺，农户在家编织、公司按件收购，农闲时节增加收入。",
        ("竹编篮", "竹编果盘"),
        10,
        (10, 16),
    ),
    Organisation(
        "石门村{surname}家土蜂蜜小店",
        CooperativeKind.household_shop,
        "石门村",
        (Linkage.purchase_order,),
        "自家养了六十多箱中华蜂，也代卖左邻右舍的蜂蜜。",
        ("野生蜂蜜",),
        5,
        (2, 3),
    ),
    Organisation(
        "上坪村{surname}记农家土货店",
        CooperativeKind.household_shop,
        "上坪村",
        (Linkage.purchase_order,),
        "夫妻俩经营的网店，卖自家和邻居的土鸡蛋、红薯粉。",
        ("高山土鸡蛋", "红薯粉", "小米"),
        5,
        (2, 3),
    ),
)


@dataclass(frozen=True, slots=True)
class Template:
    category: str
    unit: str
    # (specification, typical price in yuan)
    specs: tuple[tuple[str, int], ...]
    selling_points: tuple[str, ...]
    english: tuple[str, ...] = ()


TEMPLATES: dict[str, Template] = {
    "河田鸡": Template(
        "poultry",
        "只",
        (("整只约1.5kg", 128), ("整只约2kg", 168), ("半只装", 72), ("冷鲜分割礼盒", 198)),
        ("林下散养一年以上", "吃玉米和青草长大", "肉质紧实、汤色金黄", "宰杀后真空冷鲜发货"),
        ("Free-range chicken, raised for over a year.", "Cold-chain delivery."),
    ),
    "高山土鸡蛋": Template(
        "eggs",
        "盒",
        (("30枚装", 49), ("60枚装", 89), ("20枚礼盒", 42)),
        ("山坡散养母鸡所产", "蛋黄橙红", "每枚人工挑选", "破损包赔"),
        ("Free-range eggs, no antibiotics.",),
    ),
    "土鸭蛋": Template(
        "eggs",
        "盒",
        (("20枚装", 45), ("咸蛋 20枚", 52)),
        ("稻田放养麻鸭所产", "个大壳青", "腌制咸蛋流油"),
    ),
    "高山云雾茶": Template(
        "tea",
        "罐",
        (
            ("明前特级 250g", 198),
            ("雨前一级 250g", 128),
            ("明前特级 500g", 368),
            ("礼盒 2×125g", 228),
        ),
        ("茶园海拔八百米以上", "常年云雾缭绕", "手工杀青揉捻", "栗香浓郁、回甘持久"),
        ("Hand-picked mountain green tea.", "Early-spring harvest from high-altitude gardens."),
    ),
    "红茶": Template(
        "tea",
        "袋",
        (("一级 250g", 88), ("特级 250g", 138)),
        ("夏秋茶制作", "汤色红亮", "蜜香明显", "耐冲泡"),
        ("Black tea with a honey aroma.",),
    ),
    "黑木耳": Template(
        "mushroom",
        "袋",
        (("250g", 39), ("500g", 72), ("秋耳 500g", 86)),
        ("椴木栽培", "自然晾晒", "泡发率高", "无沙无杂质"),
        ("Sun-dried black fungus.",),
    ),
    "香菇": Template(
        "mushroom",
        "袋",
        (("干香菇 500g", 59), ("花菇 500g", 98), ("切片 250g", 32)),
        ("段木香菇", "菌盖厚实", "炭火烘干", "香味浓"),
        ("Dried shiitake, charcoal-roasted.",),
    ),
    "笋干": Template(
        "vegetable",
        "袋",
        (("500g", 46), ("手撕 250g", 28)),
        ("春笋现挖现煮", "柴火熏制", "无添加", "炖肉最香"),
    ),
    "脐橙": Template(
        "fruit",
        "箱",
        (("5kg 中果", 59), ("5kg 大果", 72), ("10kg 家庭装", 109)),
        ("果园坐落在向阳坡地", "树上自然成熟", "现摘现发", "坏果包赔"),
        ("Navel oranges, picked to order.",),
    ),
    "猕猴桃": Template(
        "fruit",
        "箱",
        (("红心 3kg", 69), ("绿心 5kg", 79), ("红心 12枚礼盒", 58)),
        ("红心品种", "酸甜适中", "常温放软即食"),
        ("Red-heart kiwifruit.",),
    ),
    "核桃": Template(
        "nuts",
        "袋",
        (("薄皮 1kg", 48), ("薄皮 2.5kg", 105), ("去壳仁 500g", 56)),
        ("老树核桃", "皮薄易剥", "仁饱满", "当年新货"),
        ("Thin-shell walnuts, this year's harvest.",),
    ),
    "板栗": Template(
        "nuts",
        "袋",
        (("生板栗 2.5kg", 45), ("熟栗仁 500g", 33)),
        ("山地野板栗", "粉糯香甜", "颗颗饱满"),
    ),
    "小米": Template(
        "grain",
        "袋",
        (("2.5kg", 39), ("5kg", 72), ("黄小米 1kg", 18)),
        ("旱地种植", "石碾去壳", "熬粥起油", "当季新米"),
        ("Millet grown on dry mountain fields.",),
    ),
    "红薯粉": Template(
        "grain",
        "袋",
        (("1kg", 29), ("2.5kg", 66), ("手工粉条 1kg", 35)),
        ("本地红心薯", "古法手工制作", "不含明矾", "久煮不烂"),
        ("Hand-made sweet potato noodles.",),
    ),
    "野生蜂蜜": Template(
        "honey",
        "瓶",
        (("500g", 68), ("1kg", 128), ("百花蜜 500g", 58), ("巢蜜 400g", 98)),
        ("中华蜂一年一取", "天然成熟蜜", "浓度高", "低温易结晶"),
        ("Raw wild honey, harvested once a year.", "No sugar added."),
    ),
    "竹编篮": Template(
        "handicraft",
        "个",
        (("小号", 48), ("中号", 78), ("大号带盖", 128)),
        ("楠竹手工编织", "一个篮子要编两天", "结实耐用"),
        ("Handwoven bamboo basket.",),
    ),
    "竹编果盘": Template(
        "handicraft",
        "个",
        (("直径28cm", 58), ("三件套", 138)),
        ("老手艺人编织", "竹丝细密", "适合摆放水果点心"),
        ("Handwoven bamboo fruit tray.",),
    ),
}

# The "other" prefixes a title may carry besides a village name.
TITLE_PREFIXES = ("青溪", "高山", "农家", "云雾山", "")

SHIPPING = (
    "48小时内发货。",
    "顺丰或邮政发货，偏远地区除外。",
    "村服务站统一打包发货。",
    "下单后现采现发。",
)

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许邓冯韩曹彭曾田萧潘袁蒋蔡余杜龙石向"
GIVEN_MALE_OLDER = "建国明军强伟勇志平福贵德成华林山海春兵文树宝才忠祥永友金水发"
GIVEN_FEMALE_OLDER = "秀英芳兰梅琴珍凤玉桂霞燕娟丽红萍花莲翠春艳菊香"
GIVEN_MALE_YOUNG = "浩宇轩子睿博俊杰鹏涛晨阳磊天昊旭"
GIVEN_FEMALE_YOUNG = "欣怡涵雨婷佳琪梓萱诗雅静悦彤思瑶"

ETHNICITIES = ("汉族", "苗族", "土家族", "彝族")
ETHNICITY_WEIGHTS = (78, 10, 7, 5)

CADRE_UNITS = (
    ("青溪县农业农村局", "县级"),
    ("青溪县教育局", "县级"),
    ("青溪县卫生健康局", "县级"),
    ("青溪县交通运输局", "县级"),
    ("青溪县供销合作社", "县级"),
    ("河田镇人民政府", "乡级"),
    ("云雾乡人民政府", "乡级"),
    ("示范市财政局驻村工作队", "市级"),
)


@dataclass(frozen=True, slots=True)
class Account:
    role: Role
    email: str
    password: str
    display_name: str


# Known passwords on purpose: the demo is for trying the API by hand.
ADMIN = Account(Role.admin, "demo-admin@example.com", "demo-admin-pass", "示范平台管理员")
OFFICER = Account(Role.officer, "demo-officer@example.com", "demo-officer-pass", "青溪县帮扶专干")
OPERATOR = Account(
    Role.site_operator, "demo-site@example.com", "demo-site-pass", "上坪村服务站站长"
)
MANAGER_PASSWORD = "demo-manager-pass"  # noqa: S105


def manager_email(index: int) -> str:
    return f"demo-manager-{index}@example.com"


# --- trade: buyers, thresholds and the Taobao-village candidate (services/demo/trade.py) ---

DEMO_BUYER = Account(Role.buyer, "demo-buyer@example.com", "demo-buyer-pass", "示范买家")
BUYER_PASSWORD = DEMO_BUYER.password  # every demo buyer and canteen shares it


def buyer_email(index: int) -> str:
    return DEMO_BUYER.email if index == 1 else f"demo-buyer-{index}@example.com"


def canteen_email(index: int) -> str:
    return f"demo-canteen-{index}@example.com"


def shop_email(index: int) -> str:
    return f"demo-shop-{index}@example.com"


# Written for a demo year only when an admin has set none; round figures in the range
# provinces have used lately (DOMAIN_FACTS), not official lines. Keyed by years before
# the current assessment year: (poverty line, monitoring line), yuan per person.
DEMO_LINES = {0: (4_500, 9_000), 1: (4_400, 8_800)}
THRESHOLD_SOURCE = (
    "示范数据 demo figures, not official: an admin sets the real lines with "
    "PUT /v1/assessment/thresholds/{year}"
)

# Where buyers live: (province, city, district), real places, invented streets.
BUYER_PLACES = (
    ("广东省", "深圳市", "南山区"),
    ("广东省", "广州市", "天河区"),
    ("上海市", "上海市", "浦东新区"),
    ("北京市", "北京市", "朝阳区"),
    ("浙江省", "杭州市", "西湖区"),
    ("江苏省", "南京市", "鼓楼区"),
    ("湖北省", "武汉市", "洪山区"),
    ("四川省", "成都市", "武侯区"),
    ("福建省", "厦门市", "思明区"),
    ("示范省", "示范市", "城关区"),
)
STREETS = ("人民路", "解放路", "中山路", "建设路", "长江路", "和平街", "幸福路", "文化路", "新华路")

# Budget units that buy for their canteens through the 832 platform (DOMAIN_FACTS).
INSTITUTIONS = (
    ("示范市第一中学食堂", "城关区", "学府路88号"),
    ("示范市人民医院职工食堂", "城关区", "健康路12号"),
    ("示范市机关事务服务中心机关食堂", "城关区", "政通路1号"),
    ("示范市实验小学食堂", "新城区", "育才街6号"),
    ("示范职业技术学院后勤服务中心", "新城区", "大学路199号"),
    ("示范市税务局机关食堂", "城关区", "财源路20号"),
    ("示范市第二人民医院食堂", "新城区", "康宁路45号"),
    ("示范省农业科学院职工食堂", "新城区", "农科路3号"),
)

# The village that lands near the Taobao-village test: the fruit cooperative sells its
# own orchard's fruit in bulk to canteens, and returnees run online shops there.
TAOBAO_VILLAGE = "白水村"
SHOP = Organisation(
    "白水村{surname}家网店",
    CooperativeKind.household_shop,
    TAOBAO_VILLAGE,
    (Linkage.purchase_order,),
    "返乡青年开的网店，卖自家和乡亲们的脐橙、猕猴桃和山货，村服务站统一发货。",
    ("脐橙", "猕猴桃", "核桃", "板栗", "野生蜂蜜", "红薯粉"),
    2,
    (0, 2),
)


@dataclass(frozen=True, slots=True)
class BulkItem:
    """A product of the cooperative's own orchard, sold by the box to canteens."""

    title: str
    unit: str
    price_yuan: int
    description: str


ORCHARD = (
    BulkItem(
        "白水果业自营果园 脐橙 10kg 单位食堂装",
        "箱",
        86,
        "合作社流转坡地自营的标准化果园所产，整箱直供学校、医院和机关食堂；"
        "农户以土地租金和园内务工分享收益。",
    ),
    BulkItem(
        "白水果业自营果园 猕猴桃 5kg 单位食堂装",
        "箱",
        74,
        "合作社自营果园的红心猕猴桃，按食堂用量整箱配送，可签订季度供货协议。",
    ),
)

REFUND_REASONS = (
    "一箱运输途中压坏，退这一件的货款",
    "少发了一件，退款",
    "部分果子变质，协商退一件",
    "包装破损漏液，退一件",
)
