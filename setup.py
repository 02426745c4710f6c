"""Packaging for quantnb, driven by settings.ini (written by hand: nbdev_new needs the network)."""
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

licenses = {'apache2': 'Apache-2.0'}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature',
            '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()
min_python = cfg['min_python']

requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
notebook_requirements = cfg.get('notebook_requirements', '').split()
gbdt_requirements = cfg.get('gbdt_requirements', '').split()

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    author=cfg['author'],
    author_email=cfg['author_email'],
    url=cfg['git_url'],
    license=licenses[cfg['license'].lower()],
    keywords=cfg['keywords'],
    classifiers=[
        'Development Status :: ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'],
        'Natural Language :: ' + cfg['language'],
        'Topic :: Office/Business :: Financial :: Investment',
    ] + ['Programming Language :: Python :: ' + v for v in py_versions[py_versions.index(min_python):]],
    # namespace discovery so quantnb/sample (data only, no __init__.py) ships as package data
    packages=setuptools.find_namespace_packages(include=['quantnb', 'quantnb.*'], exclude=['*.__pycache__']),
    include_package_data=True,
    package_data={'quantnb': ['sample/*', 'sample/universe/*', 'notebooks/*.ipynb']},
    install_requires=requirements,
    extras_require={'dev': dev_requirements + [r for r in notebook_requirements + gbdt_requirements
                                               if r not in dev_requirements],
                    'notebook': notebook_requirements, 'gbdt': gbdt_requirements},
    python_requires='>=' + min_python,
    zip_safe=False,
    entry_points={
        'console_scripts': cfg['console_scripts'].split(),
        'nbdev': [f'{cfg["lib_path"]}={cfg["lib_path"]}._modidx:d'],
    },
)
