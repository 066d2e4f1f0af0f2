"""Scrapy spiders: one round spider polling every source of a job, each kind parsed by its
pure parser (crawler.feeds, crawler.listings) and articles by crawler.articles."""
