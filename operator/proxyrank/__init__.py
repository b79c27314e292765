"""proxyrank: rank pretraining data recipes with proxy models, and measure whether the ranking can be trusted."""

__version__ = "0.1.0"

GROUP = "proxyrank.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RecipeComparison"
PLURAL = "recipecomparisons"
SINGULAR = "recipecomparison"
SHORT_NAME = "rcmp"
CATEGORY = "proxyrank"
