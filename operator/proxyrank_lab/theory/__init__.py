"""Small simulations that check the paper's theory (``proxyrank theory ...``)."""
